//! Whatever arrives over SSH, the simulator answers with text and never panics.

use super::*;
use proptest::prelude::*;

fn engine_with_a_disk() -> Engine {
    let e = Engine::new(Store::Memory, PoolConfig::sized(100 << 30), None).unwrap();
    let r = e.execute(
        "/disk add type=file file-path=/storage-pool/m/a.img file-size=1G slot=a nvme-tcp-export=yes",
        &Faults::default(),
    );
    assert_eq!(r.stdout, "");
    e
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/disk",
            "/file",
            "/interface",
            "nvme-tcp",
            "connection",
            "add",
            "set",
            "remove",
            "print",
            "detail",
            "count-only",
            "monitor-traffic",
            "once",
            "where",
            "and",
            "find",
            "[",
            "]",
            "[find",
            "[find slot=a]",
            "\"",
            "\\",
            "=",
            "~",
            "!=",
            "!",
            ";",
            "/",
            "type=file",
            "file-path=/storage-pool/m/b.img",
            "file-path=/storage-pool/m/a.img",
            "file-size=",
            "file-size=2G",
            "file-size=0",
            "slot=a",
            "slot=b",
            "slot~\"^a\"",
            "slot~\"(\"",
            "copy-from=[find slot=a]",
            "copy-from=a",
            "numbers=a",
            "name=\"storage-pool/m\"",
            "nvme-tcp-export=yes",
            "nvme-tcp-server-port=99999",
            "mount-point=storage-pool",
            "\"storage-pool/m/a.img\"",
            "\\41",
            "\u{e9}",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(line in any::<String>()) {
        let e = engine_with_a_disk();
        let reply = e.execute(&line, &Faults::default());
        prop_assert!(reply.status <= 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let e = engine_with_a_disk();
        let line = String::from_utf8_lossy(&bytes);
        e.execute(&line, &Faults::default());
    }

    #[test]
    fn command_shaped_input_never_panics(
        parts in prop::collection::vec(fragment(), 0..14),
        glue in prop::collection::vec(prop::sample::select(vec!["", " ", "  "]), 14),
    ) {
        let e = engine_with_a_disk();
        let mut line = String::new();
        for (part, sep) in parts.iter().zip(glue.iter()) {
            line.push_str(part);
            line.push_str(sep);
        }
        let reply = e.execute(&line, &Faults::default());
        // Every refusal names itself, so a client can classify it.
        if reply.status == 1 {
            prop_assert!(!reply.stderr.is_empty());
        }
        if reply.stdout.starts_with("failure") {
            prop_assert!(reply.stdout.ends_with("\r\n"));
        }
        // And the state stays consistent: every disk has its file.
        let state = e.lock();
        for d in &state.disks {
            prop_assert!(state.files.contains_key(d.file_name()));
        }
    }
}
