//! Snapshots, restores and clones through the cluster's snapshot-controller
//! and the chart's csi-snapshotter: VolumeSnapshots of claims, claims
//! restored from them and cloned from claims, in the flat and the subvolume
//! layout; a VM's disks snapshotted while attached, as KubeVirt does; and
//! every copy deleted in an order that leaves the others alive, until
//! nothing is left on the RDS.
//!
//! No kubelet runs, so no pod writes a byte: the tests write into the
//! simulator's image files (sparse files under `DIR/sim-data`) directly and
//! read the copies' files back.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::ResourceExt;

use crate::cluster::*;
use Member::*;

/// The chart's VolumeSnapshotClass (also the cluster's default).
const SNAPSHOT_CLASS: &str = "rds-csi-snapshot";
/// Bytes of each pattern a test writes.
const CHUNK: usize = 64 * 1024;
/// Where in a 1 GiB image the patterns go: its first and last bytes and
/// somewhere between.
const OFFSETS: [u64; 3] = [0, 300 << 20, GIB - CHUNK as u64];

fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    )
}

pub(crate) fn snapshots(s: &Scenario) -> Api<DynamicObject> {
    let r = snapshot_resource("VolumeSnapshot", "volumesnapshots");
    Api::namespaced_with(s.client.clone(), &s.ns, &r)
}

pub(crate) fn contents(s: &Scenario) -> Api<DynamicObject> {
    let r = snapshot_resource("VolumeSnapshotContent", "volumesnapshotcontents");
    Api::all_with(s.client.clone(), &r)
}

/// A `dataSource` naming the VolumeSnapshot `name`.
pub(crate) fn from_snapshot(name: &str) -> Value {
    json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": name})
}

/// A `dataSource` naming the claim `name` (a CSI clone).
fn from_claim(name: &str) -> Value {
    json!({"kind": "PersistentVolumeClaim", "name": name})
}

/// The pattern `seed` names: no two seeds share a byte at any offset.
fn pattern(seed: u8) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(97))
        .collect()
}

/// What a pod writing pattern `seed` to its disk would leave in the image.
pub(crate) fn write_pattern(image: &Path, seed: u8) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    for off in OFFSETS {
        f.write_all_at(&pattern(seed), off).unwrap();
    }
    f.sync_all().unwrap();
}

/// Whether the image holds pattern `seed` at every offset.
fn holds_pattern(image: &Path, seed: u8) -> bool {
    let f = std::fs::File::open(image).unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    let want = pattern(seed);
    OFFSETS.iter().all(|&off| {
        let mut buf = vec![0; CHUNK];
        f.read_exact_at(&mut buf, off).is_ok() && buf == want
    })
}

pub(crate) fn assert_holds(s: &Scenario, image: &Path, seed: u8, what: &str) {
    assert!(
        holds_pattern(image, seed),
        "{what} ({}) must hold pattern {seed}",
        image
            .strip_prefix(s.cluster.sim_data())
            .unwrap_or(image)
            .display()
    );
}

/// The simulator's file of the disk `slot` (a volume or a snapshot).
pub(crate) async fn image(s: &Scenario, slot: &str) -> std::path::PathBuf {
    let disk = s
        .disk(slot)
        .await
        .unwrap_or_else(|| panic!("the RDS has no disk {slot}"));
    s.cluster.sim_file(disk.file_path.as_deref().unwrap())
}

/// A VolumeSnapshot of `claim` as a user writes it (`class` None: the
/// cluster's default class) or KubeVirt does (its class named).
async fn snapshot(s: &Scenario, name: &str, claim: &str, class: Option<&str>) {
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let vs = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name}, "spec": spec
    });
    create(&snapshots(s), vs).await;
}

async fn snapshot_status(s: &Scenario, name: &str) -> Value {
    let vs = snapshots(s).get_opt(name).await.unwrap();
    vs.map(|vs| vs.data["status"].clone())
        .unwrap_or(Value::Null)
}

/// The status of the VolumeSnapshot `name` once `done` holds for it;
/// panics with the last status seen (its error, if any) when it does not
/// within [`WAIT`].
pub(crate) async fn wait_snapshot(
    s: &Scenario,
    name: &str,
    what: &str,
    done: fn(&Value) -> bool,
) -> Value {
    let last = Mutex::new(Value::Null);
    let found = tokio::time::timeout(
        WAIT,
        eventually(
            &format!("VolumeSnapshot {name} {what}"),
            WAIT * 2,
            || async {
                let status = snapshot_status(s, name).await;
                *last.lock().unwrap() = status.clone();
                done(&status).then_some(status)
            },
        ),
    )
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "VolumeSnapshot {name} not {what} within {WAIT:?}; its status: {}",
            last.lock().unwrap()
        )
    })
}

pub(crate) fn is_ready(status: &Value) -> bool {
    status["readyToUse"] == json!(true)
}

fn has_creation_time(status: &Value) -> bool {
    status["creationTime"].is_string()
}

pub(crate) fn creation_time(status: &Value) -> jiff::Timestamp {
    let text = status["creationTime"].as_str().expect("a creationTime");
    text.parse()
        .unwrap_or_else(|e| panic!("creationTime {text:?}: {e}"))
}

/// The snapshot's ID on the RDS (its content's `snapshotHandle`).
async fn snapshot_handle(s: &Scenario, status: &Value) -> String {
    let content = status["boundVolumeSnapshotContentName"]
        .as_str()
        .expect("a bound VolumeSnapshotContent");
    let vsc = contents(s).get(content).await.unwrap();
    let handle = vsc.data["status"]["snapshotHandle"].as_str().unwrap();
    handle.to_string()
}

/// A ready snapshot of `claim`, checked the way its users read it; its
/// handle and how long it took to become ready.
async fn ready_snapshot(s: &Scenario, name: &str, claim: &str) -> (String, Duration) {
    let start = Instant::now();
    snapshot(s, name, claim, None).await;
    let status = wait_snapshot(s, name, "ready", is_ready).await;
    let took = start.elapsed();
    assert_eq!(status["restoreSize"], json!("1Gi"), "{status}");
    let _ = creation_time(&status);
    let handle = snapshot_handle(s, &status).await;
    let disk = s.disk(&handle).await.expect("the snapshot's disk");
    assert!(!disk.exported, "a snapshot is never exported: {disk:?}");
    (handle, took)
}

/// A block claim of `class` from `source`, bound on node-a (the class may
/// wait for a first consumer); its PV.
async fn bound_claim(s: &Scenario, name: &str, class: &str, source: Option<Value>) -> String {
    s.claim_from(name, class, Mode::Block, false, source).await;
    s.select_node(name, "node-a").await;
    s.bound(name).await
}

/// A StorageClass like the chart's block class, with `volumeLayout`
/// `subvolume`, as a user adds one.
async fn subvolume_class(s: &Scenario) -> String {
    let name = format!("{}-subvol", s.ns);
    let class = json!({
        "metadata": {"name": name},
        "provisioner": s.cluster.get("RDS_CSI_E2E_DRIVER"),
        "parameters": {"volumeLayout": "subvolume"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true
    });
    create(&Api::<StorageClass>::all(s.client.clone()), class).await;
    name
}

async fn delete_class(s: &Scenario, name: &str) {
    Api::<StorageClass>::all(s.client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// A claim, its snapshot, a claim restored from the snapshot and one cloned
/// from the claim, with what each must hold.
struct Family {
    source: String,
    snapshot: String,
    restored: String,
    clone: String,
}

/// Pattern the source holds when its snapshot is taken.
const BEFORE: u8 = 1;
/// Pattern written over it afterwards (and cloned).
const AFTER: u8 = 2;

/// Where a class puts its volumes (the `volumeLayout` parameter).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Flat,
    Subvolume,
}

/// Checks the disk `id` lies where `layout` puts it: a subvolume of its
/// own or an image among the flat ones.
async fn assert_layout(s: &Scenario, id: &str, layout: Layout) {
    let slot = routeros::command::Slot::new(id).unwrap();
    let subvolume = s.rds.get_subvolume(&slot).await.unwrap();
    let file = s.disk(id).await.unwrap().file_path.unwrap();
    match layout {
        Layout::Subvolume => {
            assert!(subvolume.is_some(), "{id} has a subvolume");
            assert!(file.ends_with(&format!("/{id}/volume.img")), "{id}: {file}");
        }
        Layout::Flat => {
            assert!(subvolume.is_none(), "{id} has no subvolume: {subvolume:?}");
            assert!(
                file.ends_with(&format!("/metal-csi/{id}.img")),
                "{id}: {file}"
            );
        }
    }
}

/// Builds a [`Family`] in `class`: pattern [`BEFORE`] written, snapshot,
/// [`AFTER`] written, restore (must hold BEFORE) and clone (AFTER).
async fn family(s: &Scenario, class: &str, layout: Layout) -> Family {
    let source = bound_claim(s, "source", class, None).await;
    let source_image = image(s, &source).await;
    write_pattern(&source_image, BEFORE);

    let (snapshot, ready) = ready_snapshot(s, "snap", "source").await;
    write_pattern(&source_image, AFTER);
    let snapshot_image = image(s, &snapshot).await;
    assert_holds(s, &snapshot_image, BEFORE, "the snapshot");

    let start = Instant::now();
    let restored = bound_claim(s, "restored", class, Some(from_snapshot("snap"))).await;
    let restore_took = start.elapsed();
    assert_holds(s, &image(s, &restored).await, BEFORE, "the restored volume");

    let start = Instant::now();
    let clone = bound_claim(s, "clone", class, Some(from_claim("source"))).await;
    let clone_took = start.elapsed();
    assert_holds(s, &image(s, &clone).await, AFTER, "the clone");
    assert_holds(s, &source_image, AFTER, "the source");
    for id in [&source, &snapshot, &restored, &clone] {
        assert_layout(s, id, layout).await;
    }
    println!(
        "SNAPSHOT ({layout:?} layout): ready {:.2}s after the VolumeSnapshot was created; \
         restored claim bound after {:.2}s, cloned claim after {:.2}s",
        ready.as_secs_f64(),
        restore_took.as_secs_f64(),
        clone_took.as_secs_f64()
    );
    Family {
        source,
        snapshot,
        restored,
        clone,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Member {
    Source,
    Snapshot,
    Restored,
    Clone,
}

impl Family {
    fn id(&self, m: Member) -> &str {
        match m {
            Member::Source => &self.source,
            Member::Snapshot => &self.snapshot,
            Member::Restored => &self.restored,
            Member::Clone => &self.clone,
        }
    }

    /// The pattern a member's image holds.
    fn seed(m: Member) -> u8 {
        match m {
            Member::Source | Member::Clone => AFTER,
            Member::Snapshot | Member::Restored => BEFORE,
        }
    }

    /// Deletes `m` the way a user does and waits until its disk is gone.
    async fn delete(&self, s: &Scenario, m: Member) {
        let claim = match m {
            Member::Source => "source",
            Member::Restored => "restored",
            Member::Clone => "clone",
            Member::Snapshot => {
                snapshots(s)
                    .delete("snap", &DeleteParams::default())
                    .await
                    .unwrap();
                eventually("snapshot snap's disk deleted", WAIT, || async {
                    s.disk(&self.snapshot).await.is_none().then_some(())
                })
                .await;
                return;
            }
        };
        s.delete_claim(claim).await;
        s.wait_reclaimed(self.id(m)).await;
    }

    /// Deletes the members in `order`; after each deletion the others keep
    /// their disks and bytes; at the end nothing of any is left.
    async fn delete_in_order(&self, s: &Scenario, order: [Member; 4]) {
        for (i, &m) in order.iter().enumerate() {
            self.delete(s, m).await;
            for &kept in &order[i + 1..] {
                let image = image(s, self.id(kept)).await;
                let what = format!("{kept:?} after {m:?} was deleted");
                assert_holds(s, &image, Self::seed(kept), &what);
            }
        }
        let ids = [&self.source, &self.snapshot, &self.restored, &self.clone];
        nothing_left(s, &ids).await;
    }
}

/// Files under `dir` (recursively) whose path names one of `ids`.
fn files_naming(dir: &Path, ids: &[&String], out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.to_string_lossy();
        if ids.iter().any(|id| name.contains(id.as_str())) {
            out.push(name.into_owned());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files_naming(&path, ids, out);
        }
    }
}

/// No disk, file or subvolume of any of `ids` on the RDS (asked over
/// SSH), and no file of theirs in the simulator's data directory.
async fn nothing_left(s: &Scenario, ids: &[&String]) {
    for id in ids {
        assert!(s.disk(id).await.is_none(), "disk {id} left on the RDS");
        let files = s.rds.find_files(id).await.unwrap();
        assert!(files.is_empty(), "files of {id} left on the RDS: {files:?}");
        let slot = routeros::command::Slot::new(id).unwrap();
        let subvolume = s.rds.get_subvolume(&slot).await.unwrap();
        assert!(subvolume.is_none(), "subvolume {id} left: {subvolume:?}");
    }
    let mut left = vec![];
    files_naming(&s.cluster.sim_data(), ids, &mut left);
    assert!(left.is_empty(), "left in the simulator's data: {left:?}");
}

/// The source deleted first, while its snapshot and both copies live.
const SOURCE_FIRST: [Member; 4] = [Source, Snapshot, Clone, Restored];
/// The snapshot deleted first, while the claim restored from it lives.
const SNAPSHOT_FIRST: [Member; 4] = [Snapshot, Restored, Clone, Source];

/// A [`Family`] in the chart's block class (flat) or in a subvolume class
/// the scenario adds, deleted in `order`.
async fn family_deleted_in_order(name: &str, layout: Layout, order: [Member; 4]) {
    let s = Scenario::new(name).await;
    let class = match layout {
        Layout::Subvolume => Some(subvolume_class(&s).await),
        Layout::Flat => None,
    };
    let f = family(&s, class.as_deref().unwrap_or(BLOCK), layout).await;
    f.delete_in_order(&s, order).await;
    if let Some(class) = class {
        delete_class(&s, &class).await;
    }
    s.cleanup().await;
}

/// Two families in `layout`, one deleted [`SOURCE_FIRST`], the other
/// [`SNAPSHOT_FIRST`].
async fn families_deleted_in_any_order(name: &str, layout: Layout) {
    family_deleted_in_order(name, layout, SOURCE_FIRST).await;
    family_deleted_in_order(name, layout, SNAPSHOT_FIRST).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_flat_claim_s_snapshot_restore_and_clone_hold_its_bytes_and_go_in_any_order() {
    families_deleted_in_any_order("e2e-snapflat", Layout::Flat).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_vm_snapshot_of_attached_rwx_disks_gets_creation_times_while_the_guest_is_frozen() {
    const DISKS: u8 = 3;
    let s = Scenario::new("e2e-vmsnap").await;
    let claims: Vec<String> = (0..DISKS).map(|i| format!("disk{i}")).collect();
    let mut pvs = vec![];
    for (i, claim) in claims.iter().enumerate() {
        s.claim(claim, BLOCK_RWX, Mode::Block, true).await;
        let pv = s.bound(claim).await;
        write_pattern(&image(&s, &pv).await, 10 + i as u8);
        pvs.push(pv);
    }
    let names: Vec<&str> = claims.iter().map(String::as_str).collect();
    let uid = s.vmi("vm1", "node-a", &names).await;
    let devices: Vec<(&str, Mode)> = names.iter().map(|c| (*c, Mode::Block)).collect();
    s.launcher("virt-launcher-vm1", "node-a", "vm1", &uid, &devices, None)
        .await;
    for pv in &pvs {
        s.wait_attached(pv, "node-a").await;
    }

    // KubeVirt's snapshot controller, with the guest frozen: one
    // VolumeSnapshot per disk, in its class, one after the other.
    let start = Instant::now();
    let vs_names: Vec<String> = claims
        .iter()
        .map(|c| format!("vmsnapshot-{uid}-volume-{c}"))
        .collect();
    for (vs, claim) in vs_names.iter().zip(&claims) {
        snapshot(&s, vs, claim, Some(SNAPSHOT_CLASS)).await;
    }
    let first = snapshots(&s).get(&vs_names[0]).await.unwrap();
    let first_created = first.creation_timestamp().unwrap().0;
    let mut times = vec![];
    for vs in &vs_names {
        let status = wait_snapshot(&s, vs, "given a creation time", has_creation_time).await;
        times.push(creation_time(&status));
    }
    let unfrozen = start.elapsed();
    let mut handles = vec![];
    for vs in &vs_names {
        let status = wait_snapshot(&s, vs, "ready", is_ready).await;
        handles.push(snapshot_handle(&s, &status).await);
    }
    let all_ready = start.elapsed();
    let ready_at = jiff::Timestamp::now();
    println!(
        "VM SNAPSHOT: {DISKS} attached RWX disks: all VolumeSnapshots had a creation time \
         {:.2}s after the first was created (the guest stays frozen that long), all ready \
         after {:.2}s",
        unfrozen.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    // Creation times are whole seconds, as is the API server's timestamp.
    let window_end = ready_at.as_second() + 1;
    for (vs, t) in vs_names.iter().zip(&times) {
        assert!(
            t.as_second() >= first_created.as_second() && t.as_second() <= window_end,
            "{vs}'s creationTime {t} is outside the freeze window [{first_created}, {ready_at}]"
        );
    }
    for (i, (pv, handle)) in pvs.iter().zip(&handles).enumerate() {
        assert!(s.is_attached(pv, "node-a").await, "{pv} stays attached");
        let what = format!("the snapshot of disk{i}");
        assert_holds(&s, &image(&s, handle).await, 10 + i as u8, &what);
    }

    // The VM snapshot deleted while the VM runs, then the VM and its disks.
    for vs in &vs_names {
        snapshots(&s)
            .delete(vs, &DeleteParams::default())
            .await
            .unwrap();
    }
    for handle in &handles {
        eventually(&format!("snapshot {handle} deleted"), WAIT, || async {
            s.disk(handle).await.is_none().then_some(())
        })
        .await;
    }
    s.delete_pod("virt-launcher-vm1").await;
    for (pv, claim) in pvs.iter().zip(&claims) {
        s.wait_detached(pv, "node-a").await;
        s.delete_claim(claim).await;
        s.wait_reclaimed(pv).await;
    }
    let ids: Vec<&String> = pvs.iter().chain(&handles).collect();
    nothing_left(&s, &ids).await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_subvolume_claim_s_snapshot_restore_and_clone_hold_its_bytes_and_go_in_any_order() {
    families_deleted_in_any_order("e2e-snapsub", Layout::Subvolume).await;
}
