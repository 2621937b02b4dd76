//! A full disk: the journal's data directory on a small tmpfs that a filler file
//! fills up. Appends answer 503, nothing refused becomes visible, reads keep working,
//! and the server takes writes again by itself once the filler is gone.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where the mount fails the test says why
//! and returns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{long_spec, quick_spec, spawn_app_with, TestApp, TIMEOUT};

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).map_err(|e| format!("cannot create the mount point: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "runyard-test"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { _dir: dir, mount })
    }

    fn path(&self) -> &Path {
        &self.mount
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Writes a file until the disk refuses more; returns the bytes it took.
    fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).expect("filler file");
        let block = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        // Big blocks, then small ones for the last pages.
        for chunk in [block.len(), 4096, 512] {
            while file.write_all(&block[..chunk]).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("filler removed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the server of this test may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

async fn names(app: &TestApp) -> Vec<String> {
    let (status, body) = app.get_json("/api/v1/runs").await;
    assert_eq!(status, 200, "{body}");
    let runs = body
        .get("runs")
        .and_then(Value::as_array)
        .or_else(|| body.as_array())
        .unwrap_or_else(|| panic!("a list of runs: {body}"));
    runs.iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect()
}

#[actix_web::test]
async fn a_full_disk_answers_503_loses_nothing_and_recovers_by_itself() {
    let disk = match SmallDisk::mount("48m") {
        Ok(disk) => disk,
        Err(reason) => {
            eprintln!(
                "SKIPPED a_full_disk_answers_503...: cannot mount a small filesystem: {reason}"
            );
            return;
        }
    };
    let data_dir = disk.path().join("data");
    let app = spawn_app_with(|config| {
        config.server.data_dir = data_dir.clone();
        config.train.cpu_slots = 1;
    })
    .await;

    // One long run trains (and journals epochs) throughout; the others wait behind it.
    let hog = app.submit_ok(&long_spec("hog")).await;
    app.wait_for(&hog, |r| r["state"] == "running").await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let name = format!("before-{i}");
        app.submit_ok(&quick_spec(&name)).await;
        acknowledged.push(name);
    }

    let taken = disk.fill();
    assert!(taken > 0, "the filler took no space");

    // The first append that needs the disk fails; every submit is answered either
    // 201 (its bytes still fitted) or 503, never anything else.
    let mut refused = None;
    for i in 0..2000 {
        let name = format!("during-{i}");
        let response = app.submit(&quick_spec(&name)).await;
        match response.status().as_u16() {
            201 => acknowledged.push(name),
            503 => {
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json"
                );
                let body: Value = response.json().await.expect("problem body");
                assert_eq!(body["code"], "journal_unavailable", "{body}");
                assert_eq!(body["status"], 503);
                assert!(
                    body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                    "{body}"
                );
                refused = Some(name);
                break;
            }
            other => panic!(
                "submit answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    let refused = refused.expect("a full disk refuses an append");

    // Degraded: appends are refused at once, reads keep working.
    let again = app.submit(&quick_spec("while-degraded")).await;
    assert_eq!(again.status(), 503);
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["journal"]["status"], "degraded", "{health}");
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    let visible = names(&app).await;
    for name in &acknowledged {
        assert!(visible.contains(name), "acknowledged run {name} missing");
    }
    assert!(
        !visible.contains(&refused),
        "refused run {refused} is visible"
    );
    assert!(!visible.iter().any(|n| n == "while-degraded"));
    let (status, run) = app.get_json(&format!("/api/v1/runs/{hog}")).await;
    assert_eq!(status, 200, "{run}");
    let (status, _) = app.get_json(&format!("/api/v1/runs/{hog}/events")).await;
    assert_eq!(status, 200);

    // Space comes back: the server recovers without a restart.
    disk.free();
    let after = tokio::time::timeout(TIMEOUT, async {
        loop {
            let response = app.submit(&quick_spec("after")).await;
            match response.status().as_u16() {
                201 => break response.json::<Value>().await.expect("run"),
                503 => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                other => panic!("submit answered {other}"),
            }
        }
    })
    .await
    .expect("the journal recovered once space was back");
    assert_eq!(after["name"], "after");
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["journal"]["status"], "ok", "{health}");
    assert!(health["journal_recoveries"].as_u64() >= Some(1), "{health}");

    let visible = names(&app).await;
    for name in acknowledged
        .iter()
        .chain(std::iter::once(&"after".to_string()))
    {
        assert!(visible.contains(name), "acknowledged run {name} missing");
    }
    assert!(
        !visible.contains(&refused),
        "refused run {refused} appeared"
    );

    // The hog's epochs, refused while the disk was full, are journaled after it:
    // every epoch exactly once and in order.
    let hog_done = app.post(&format!("/api/v1/runs/{hog}/cancel")).await;
    let status = hog_done.status();
    assert!(
        status.is_success(),
        "cancel answered {status}: {}",
        hog_done.text().await.unwrap_or_default()
    );
    app.wait_for(&hog, |r| r["state"] == "cancelled").await;
    let epochs: Vec<u64> = app
        .events(&hog)
        .await
        .iter()
        .filter(|e| e["type"] == "EpochCompleted")
        .map(|e| e["data"]["epoch"].as_u64().expect("epoch number"))
        .collect();
    assert!(!epochs.is_empty());
    let expected: Vec<u64> = (1..=epochs.len() as u64).collect();
    assert_eq!(epochs, expected, "epochs journaled with a gap or twice");

    // The queued runs train to the end on the recovered journal.
    for name in ["before-0", "after"] {
        let (_, list) = app.get_json("/api/v1/runs").await;
        let id = list_ids(&list, name);
        app.wait_for(&id, |r| r["state"] == "completed").await;
    }
}

fn list_ids(list: &Value, name: &str) -> String {
    let runs = list
        .get("runs")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .expect("runs");
    runs.iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no run named {name}"))
        .to_string()
}
