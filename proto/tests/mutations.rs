//! Property tests of what crosses the wire: a start request mutated at random, as bytes on the
//! gRPC wire and as the JSON a `temporal workflow start` sends, is always either read or
//! refused naming a field; nothing panics, nothing is read without being checked. CI runs a
//! bounded number of cases (`PROPTEST_CASES` raises it).

use prost::Message;
use proptest::prelude::*;
use signalbox_contract::Received;
use signalbox_domain::{ApprovalPolicy, Artifact, BatchPlan, BatchStep, DeployRequest, Digest, HealthPolicy, OnExpiry, Target};
use signalbox_proto::{StartDeploy, pb, wire_field};

fn request() -> DeployRequest {
    DeployRequest {
        service: "checkout".into(),
        artifact: Artifact { digest: Digest::from_sha256_bytes(&[7; 32]), git_sha: "abc1234".into(), version: "1.1.0".into() },
        target: Target::local("local"),
        strategy: signalbox_domain::Strategy::Rolling,
        batch_plan: BatchPlan { steps: vec![BatchStep::Count(1), BatchStep::Percent(100.0)] },
        bake_ms: 500,
        health: HealthPolicy { samples: 4, sample_interval_ms: 1_000, ..HealthPolicy::default() },
        deployer: "alice".into(),
        dry_run: true,
        rollback_window_ms: 0,
        approval: Some(ApprovalPolicy { before_batches: vec![2], approvers: vec!["bob".into()], quorum: 1, allow_self_approval: false, expiry_ms: 60_000, on_expiry: OnExpiry::Proceed }),
        analysis: None,
        queue: false,
        control: Default::default(),
    }
}

/// One edit of a byte string: overwrite, insert or delete at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Set(i, b) if n > 0 => bytes[i % n] = b,
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Delete(i) if n > 0 => {
                bytes.remove(i % n);
            }
            _ => {}
        }
    }
    bytes
}

/// A field path as refusals name them: dotted names and indices, never empty.
fn is_field(path: &str) -> bool {
    !path.is_empty() && path.chars().all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_grpc_start_is_read_or_refused_by_field(edits in prop::collection::vec(edit(), 1..12)) {
        let bytes = apply(pb::StartDeployRequest::from(request()).encode_to_vec(), &edits);
        if let Ok(wire) = pb::StartDeployRequest::decode(bytes.as_slice()) {
            match StartDeploy::try_from(wire) {
                Ok(start) => {
                    if let Err(e) = start.request.validate() {
                        let field = wire_field(e.field(), &start.request);
                        prop_assert!(is_field(&field), "{field:?}: {e}");
                    }
                }
                Err(e) => prop_assert!(is_field(e.field()), "{e}"),
            }
        }
    }

    #[test]
    fn a_mutated_json_start_is_read_or_unreadable_by_field(edits in prop::collection::vec(edit(), 1..12)) {
        let json = apply(serde_json::to_vec(&request()).expect("a request serializes"), &edits);
        match Received::<DeployRequest>::from_json(&json).into_result() {
            Ok(req) => {
                if let Err(e) = req.validate() {
                    prop_assert!(is_field(e.field()), "{e}");
                }
            }
            Err(unreadable) => prop_assert!(!unreadable.field.is_empty() && !unreadable.rule.is_empty(), "{unreadable}"),
        }
    }

    #[test]
    fn a_mutated_control_command_is_bounded_or_refused(by in ".{0,300}", reason in ".{0,2000}") {
        let cmd = signalbox_domain::Command::new(by, reason);
        if signalbox_domain::control::check_command(&cmd).is_ok() {
            prop_assert!(cmd.by.chars().count() <= signalbox_domain::bounds::MAX_PRINCIPAL && cmd.reason.chars().count() <= signalbox_domain::bounds::MAX_TEXT);
            prop_assert!(!cmd.by.trim().is_empty() && !cmd.by.contains('\n'));
        }
    }
}
