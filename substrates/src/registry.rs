//! The registry of substrate kinds: activities open a target through it by the target's kind,
//! so a new kind is one registration in the worker and touches no activity.

use std::collections::BTreeMap;
use std::sync::Arc;

use signalbox_domain::Target;

use crate::{Error, Result, Substrate};

/// A kind of target: opens targets of that kind by name.
pub trait Kind: Send + Sync + 'static {
    /// The target `name` of this kind; an unknown one is [`Error::Target`] naming it.
    fn open(&self, name: &str) -> Result<Arc<dyn Substrate>>;
}

/// The substrate kinds a worker serves, by kind name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn Kind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("kinds", &self.kinds.keys().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// This registry with `kind` served by `substrate`.
    pub fn with(mut self, kind: impl Into<String>, substrate: impl Kind) -> Self {
        self.kinds.insert(kind.into(), Arc::new(substrate));
        self
    }

    /// Opens `target` with the substrate of its kind.
    pub fn open(&self, target: &Target) -> Result<Arc<dyn Substrate>> {
        match self.kinds.get(&target.kind) {
            Some(kind) => kind.open(&target.name),
            None => Err(Error::UnknownKind { kind: target.kind.clone(), known: self.kinds.keys().cloned().collect::<Vec<_>>().join(", ") }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl Kind for Nowhere {
        fn open(&self, name: &str) -> Result<Arc<dyn Substrate>> {
            Err(Error::Target(format!("no target named {name:?}")))
        }
    }

    #[test]
    fn a_target_opens_by_its_kind_and_an_unknown_kind_is_named() {
        let registry = Registry::default().with("void", Nowhere);
        let void = Target { name: "x".into(), kind: "void".into() };
        assert_eq!(registry.open(&void).err().unwrap().to_string(), "target.name: no target named \"x\"");
        let err = registry.open(&Target::local("x")).err().unwrap();
        assert_eq!(err.to_string(), "target.kind: no substrate of kind \"local\" on this worker (it has: void)");
        assert!(!err.is_retryable());
    }
}
