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
