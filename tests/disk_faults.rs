//! Disk faults under the embedded log, on the real binary.
//!
//! - A failed fsync: strace makes every fdatasync of the log's journal
//!   fail with EIO. No order gets a 2xx: the first hears `outcome_unknown`,
//!   and the log halts (every later write `event_log_unavailable`, `/ready`
//!   503) instead of retrying the fsync and acknowledging. Restarted
//!   without the fault, nothing acknowledged before is lost and writes
//!   resume. The negative control skips the fsyncs instead (strace makes
//!   them return 0 without running): orders are acknowledged with no fsync
//!   behind them, which the same check sees.
//! - A full disk: the log's folder on a small loop-mounted ext4. Filled up,
//!   orders get `503 disk_full`; once space returns, writes resume, and
//!   every acknowledged order is decided once.

use crate::common;

use common::all_in_one::AllInOne;
use common::history::Verdict;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn order(product: uuid::Uuid) -> serde_json::Value {
    json!({ "customer_email": "disk@example.com", "items": [{ "product_id": product, "quantity": 1 }] })
}

/// strace arguments that make every fdatasync of the journal files in
/// `log_dir` end as `effect` (`error=EIO`, or `retval=0`: skipped).
fn journal_fsyncs(log_dir: &Path, effect: &str) -> Vec<String> {
    let mut args: Vec<String> = ["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"]
        .map(String::from)
        .to_vec();
    args.push("-e".into());
    args.push(format!("inject=fdatasync:{effect}"));
    // The journal files the next run may use (numbered on from those of
    // earlier runs).
    for number in 0..16u64 {
        args.push("-P".into());
        args.push(
            log_dir
                .join(format!("journal-{number:020}.wal"))
                .display()
                .to_string(),
        );
    }
    args
}

/// A deployment with one product and three decided orders, stopped.
async fn stocked(data_dir: &Path, database: &Path) -> uuid::Uuid {
    let app = AllInOne::start(data_dir, database, None).await;
    let product = app.api.create_product("DISK-1", 1.00, 1000).await;
    for _ in 0..3 {
        app.api.place_order(&order(product)).await.expect(202);
    }
    app.api.wait_until_decided(3).await;
    app.stop();
    product
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_gets_no_2xx_and_halts_the_log_until_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (data_dir, database) = (dir.path().join("data"), dir.path().join("read-model.db"));
    let product = stocked(&data_dir, &database).await;
    let log_dir = data_dir.join("log");

    // Every journal fsync fails.
    let app = AllInOne::start(
        &data_dir,
        &database,
        Some(journal_fsyncs(&log_dir, "error=EIO")),
    )
    .await;
    let mut codes = Vec::new();
    let mut verdict = Verdict::counted("embedded log, every fsync failing", false);
    for _ in 0..5 {
        let reply = app.api.place_order(&order(product)).await;
        verdict.orders += 1;
        if reply.status / 100 == 2 {
            verdict.acknowledged += 1;
            verdict.acknowledged_undurable += 1;
        }
        verdict.report_if_anomalous();
        assert_ne!(
            reply.status / 100,
            2,
            "an order was acknowledged although its fsync failed"
        );
        codes.push(reply.error(503).code.into_owned());
    }
    assert_eq!(codes[0], "outcome_unknown", "{codes:?}");
    assert!(
        codes[1..].iter().all(|c| c == "event_log_unavailable"),
        "{codes:?}"
    );
    let (status, ready) = app.api.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["event_log"].as_str().unwrap().contains("halted"),
        "{ready}"
    );
    app.stop();

    // Restarted without the fault: what was acknowledged is there, and
    // writes resume.
    let app = AllInOne::start(&data_dir, &database, None).await;
    app.api.place_order(&order(product)).await.expect(202);
    app.api
        .wait_for("the earlier orders and the new one decided", || async {
            let stats = app.api.stats().await.found();
            let decided = stats.map_or(0, |s| {
                s.figures
                    .orders_in(streamstock::domain::status::OrderStatus::Confirmed)
            });
            decided >= 4
        })
        .await;
    let orders = app.api.all_orders().await.unwrap();
    // The three orders of `stocked` and the one after the restart were
    // acknowledged; the 503 `outcome_unknown` may have landed.
    verdict.lost = 4usize.saturating_sub(orders.len());
    verdict.report();
    assert!((4..=5).contains(&orders.len()), "{} orders", orders.len());
    app.stop();

    // Negative control: the fsyncs skipped (strace answers 0 without
    // running them). The log acknowledges orders that no fsync covered,
    // and the check above sees it.
    let app = AllInOne::start(
        &data_dir,
        &database,
        Some(journal_fsyncs(&log_dir, "retval=0")),
    )
    .await;
    let acknowledged = app.api.place_order(&order(product)).await.status;
    let mut control = Verdict::counted("embedded log, fsyncs skipped", true);
    control.orders = 1;
    if acknowledged / 100 == 2 {
        control.acknowledged = 1;
        control.acknowledged_undurable = 1;
    }
    control.report();
    assert_eq!(
        acknowledged / 100,
        2,
        "the negative control did not show its anomaly: no acknowledgement without an fsync"
    );
    app.stop();
}

/// A small ext4 file system on a loop device, mounted for the test.
struct SmallDisk {
    mount: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        let run = |program: &str, args: &[&str]| {
            let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
                panic!("{program}: {e} (the disk-full test needs root, mkfs.ext4 and loop devices)")
            });
            assert!(
                output.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let image_arg = image.display().to_string();
        run("truncate", &["-s", &format!("{megabytes}M"), &image_arg]);
        run("mkfs.ext4", &["-q", "-m", "0", &image_arg]);
        let mount = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image_arg,
                &mount.path().display().to_string(),
            ],
        );
        SmallDisk {
            mount,
            _image: image_dir,
        }
    }

    fn path(&self) -> PathBuf {
        self.mount.path().to_path_buf()
    }

    /// Fills the file system up with `filler`.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        // dd stops at ENOSPC, which is the point.
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", filler.display()),
                "bs=64k",
            ])
            .stderr(Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_disk_full_and_loses_nothing() {
    let disk = SmallDisk::mount(24);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("read-model.db");
    let data_dir = disk.path().join("data");
    let app = AllInOne::start(&data_dir, &database, None).await;
    let product = app.api.create_product("FULL-1", 1.00, 100_000).await;
    let mut accepted = 0;
    for _ in 0..3 {
        app.api.place_order(&order(product)).await.expect(202);
        accepted += 1;
    }

    let filler = disk.fill();
    // Refusals begin within a few orders. Some orders may still be taken
    // in between (the log frees space as it trims and checkpoints): each
    // acknowledged one must be decided in the end like any other.
    let mut refused = 0;
    for _ in 0..200 {
        let reply = app.api.place_order(&order(product)).await;
        match reply.status {
            202 => accepted += 1,
            503 => {
                let error = reply.error(503);
                assert_eq!(error.code, "disk_full", "{error:?}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("{other} {:?} after {refused} refusals", reply.body),
        }
    }
    assert_eq!(refused, 5, "the full disk never refused an order");

    // Space returns: writes resume, and every acknowledged order is decided.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app.api.place_order(&order(product)).await;
        if reply.status == 202 {
            accepted += 1;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {:?}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.api.wait_until_decided(accepted).await;
    let mut verdict = Verdict::counted("embedded log, a full disk", false);
    verdict.orders = accepted as usize + refused;
    verdict.acknowledged = accepted as usize;
    verdict.unknown = refused;
    verdict.report();
    app.stop();
}
