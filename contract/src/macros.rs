//! The marker types of the contract. Each declares a pinned wire name, the string history
//! records: renaming a Rust type must never change it, or an in-flight deploy could not be
//! replayed.

/// An activity: a marker implementing `ActivityDefinition`.
macro_rules! activity {
    ($(#[$doc:meta])* $ty:ident = $wire:literal: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned wire name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::ActivityDefinition for $ty {
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }
    };
}

/// A workflow type, as clients start it.
macro_rules! workflow {
    ($(#[$doc:meta])* $ty:ident = $wire:literal: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned workflow type name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::WorkflowDefinition for $ty {
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }

        impl temporalio_common::HasWorkflowDefinition for $ty {
            type Run = Self;
        }
    };
}

/// A signal of a workflow type.
macro_rules! signal {
    ($(#[$doc:meta])* $ty:ident = $wire:literal on $workflow:ty: $input:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned signal name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::SignalDefinition for $ty {
            type Workflow = $workflow;
            type Input = $input;

            fn name(&self) -> &str {
                $wire
            }
        }
    };
}

/// An update of a workflow type.
macro_rules! update {
    ($(#[$doc:meta])* $ty:ident = $wire:literal on $workflow:ty: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned update name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::UpdateDefinition for $ty {
            type Workflow = $workflow;
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }
    };
}

/// A query of a workflow type.
macro_rules! query {
    ($(#[$doc:meta])* $ty:ident = $wire:literal on $workflow:ty: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $ty;

        impl $ty {
            /// The pinned query name.
            pub const NAME: &'static str = $wire;
        }

        impl temporalio_common::QueryDefinition for $ty {
            type Workflow = $workflow;
            type Input = $input;
            type Output = $output;

            fn name(&self) -> &str {
                $wire
            }
        }
    };
}
