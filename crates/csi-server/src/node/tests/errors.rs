//! Node errors and the gRPC codes they map to.

use super::*;

#[test]
fn data_path_errors_map_to_the_codes_the_sidecars_expect() {
    let cases = [
        (
            nvme::Error::refused("format", "holds xfs"),
            Code::FailedPrecondition,
        ),
        (
            nvme::Error::refused_for_now("format", "unreadable"),
            Code::Unavailable,
        ),
        (
            nvme::Error::NoDevice {
                nqn: NQN.into(),
                waited: Duration::from_secs(1),
                detail: "x".into(),
            },
            Code::Unavailable,
        ),
        (
            nvme::Error::ForeignNqn {
                nqn: "a".into(),
                prefix: "b".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            nvme::Error::io(
                "mount",
                "/x",
                std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"),
            ),
            Code::DeadlineExceeded,
        ),
    ];
    for (source, code) in cases {
        let s: Status = NodeError::DataPath {
            op: "stage volume pvc-1".into(),
            source,
        }
        .into();
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(
            s.message().starts_with("stage volume pvc-1: "),
            "{}",
            s.message()
        );
    }
}

#[test]
fn each_node_failure_maps_to_the_code_its_condition_calls_for() {
    let vol = || ID.to_string();
    let path = || PathBuf::from(STAGING);
    let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let cases = [
        (
            NodeError::invalid("volume_id", "must not be empty"),
            Code::InvalidArgument,
        ),
        (NodeError::Busy { volume: vol() }, Code::Aborted),
        (
            NodeError::UnusableVolumePath { given: "x".into() },
            Code::NotFound,
        ),
        (NodeError::NotStagedHere { volume: vol() }, Code::NotFound),
        (NodeError::NoVolumePath { path: path() }, Code::NotFound),
        (
            NodeError::StagedAsOtherKind {
                volume: vol(),
                at: path(),
                block: true,
            },
            Code::AlreadyExists,
        ),
        (
            NodeError::PublishedWithOtherReadOnly {
                volume: vol(),
                at: path(),
                readonly: true,
            },
            Code::AlreadyExists,
        ),
        (
            NodeError::StagedElsewhere {
                volume: vol(),
                at: path(),
            },
            Code::FailedPrecondition,
        ),
        (
            NodeError::StillPublished {
                volume: vol(),
                at: path(),
            },
            Code::FailedPrecondition,
        ),
        (
            NodeError::DirectoryNotEmpty { path: path() },
            Code::FailedPrecondition,
        ),
        (
            NodeError::ForeignMount {
                path: path(),
                source_name: "/dev/sda".into(),
                dev: DevId::new(8, 0),
            },
            Code::FailedPrecondition,
        ),
        (
            NodeError::NotConnected { nqn: NQN.into() },
            Code::FailedPrecondition,
        ),
        (
            NodeError::FormatRecordUnread {
                volume: vol(),
                error: crate::node::format_record::RecordError("timeout".into()),
            },
            Code::Unavailable,
        ),
        (
            NodeError::Record {
                action: "write",
                volume: vol(),
                dir: Some(STATE.into()),
                source: io(),
            },
            Code::Internal,
        ),
        (
            NodeError::Host {
                op: "stat",
                path: path(),
                source: io(),
            },
            Code::Internal,
        ),
        (
            NodeError::NotRecovered {
                staging: path(),
                found: "NotMounted".into(),
            },
            Code::Internal,
        ),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code, "{e:?}");
        assert_eq!(Status::from(e).code(), code);
    }
}

#[test]
fn a_failure_with_a_cause_carries_the_cause_in_the_status_message() {
    let s: Status = NodeError::Record {
        action: "write",
        volume: ID.into(),
        dir: Some(STATE.into()),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    }
    .into();
    assert_eq!(
        s.message(),
        format!("write the record of volume {ID} in {STATE}: permission denied")
    );
    let s: Status = NodeError::DirectoryNotEmpty {
        path: TARGET.into(),
    }
    .into();
    assert_eq!(
        s.message(),
        format!("{TARGET} is not empty; it is left in place (paths are never deleted recursively)")
    );
}
