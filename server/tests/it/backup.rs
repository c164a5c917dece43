//! Backups that restore (issue 19), on both backends: a platform with an uploaded slide and a
//! signed-out case is backed up while it runs, backed up again (nothing copied twice), a third
//! time keeping two generations, and restored into a fresh platform, where every object's
//! SHA-256, the audit chain, the signed report and the slide's tiles check out. A wrong
//! passphrase, a dump changed along with its hash in the manifest, or a keys file of another
//! generation writes nothing, and a platform that is not empty is not overwritten.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sqlx::Row;

use crate::support::people::{sign_out_with, staff, wait_for};
use crate::support::{As, Backend, TestServer, sha256_hex, submit_case, synth_slide};

const PASSPHRASE: &str = "a long backup passphrase kept apart";

/// Key → SHA-256 of every object in a platform's store.
async fn object_digests(server: &TestServer) -> BTreeMap<String, String> {
    let store = server.store();
    let mut digests = BTreeMap::new();
    for key in pathfed_core::store::list_keys(&store, "").await.unwrap() {
        let bytes = pathfed_core::store::get_bytes(&store, &key).await.unwrap();
        digests.insert(key, sha256_hex(&bytes));
    }
    digests
}

/// Names of the entries of a folder (none when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Content files in the backup's `objects/` folder.
fn object_files(backups: &Path) -> usize {
    entries(&backups.join("objects"))
        .iter()
        .map(|prefix| entries(&backups.join("objects").join(prefix)).len())
        .sum()
}

/// `pathfed admin backup` into `backups`, keeping `keep` generations; its output.
fn backup(server: &TestServer, backups: &Path, pass: &Path, keep: &str) -> String {
    server.cli_ok(&[
        "admin",
        "backup",
        "--out",
        backups.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--keep",
        keep,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backup_restores_into_a_fresh_platform() {
    round_trip(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backup_restores_into_a_fresh_platform() {
    round_trip(Backend::Remote).await;
}

async fn round_trip(backend: Backend) {
    let mut server = TestServer::start(backend);
    let people = staff(&server);
    let spoke_token = people.spoke.token.clone();
    let file = synth_slide(server.dir.path(), "backup.svs", 2400, 1800, 17);
    let (case, slide) = submit_case(&server, &spoke_token, &file, "MRN-BACKUP-1");
    sign_out_with(&people.first, &people.second, &case, &slide, "GAS-G3").await;
    let pdf = server.dir.path().join("report.pdf");
    server.cli_ok(&[
        "case",
        "report",
        &case,
        "--out",
        pdf.to_str().unwrap(),
        "--server",
        &server.url,
        "--token",
        &spoke_token,
    ]);
    // The sign-out's curation writes research objects in the background: once it is done,
    // nothing changes the store until the server stops.
    let db = server.db().await;
    wait_for(
        "the sign-out's background work",
        Duration::from_secs(120),
        || {
            let db = db.clone();
            async move {
                let curated: i64 = sqlx::query("SELECT COUNT(*) AS n FROM research_slides")
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
                    .get("n");
                let pending: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')",
                )
                .fetch_one(db.pool())
                .await
                .unwrap()
                .get("n");
                (curated > 0 && pending == 0).then_some(())
            }
        },
    )
    .await;

    let backups = server.dir.path().join("backups");
    let pass = server.dir.path().join("backup.pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();

    // 1. Online, while the server runs.
    let first = backup(&server, &backups, &pass, "7");
    assert!(first.contains("generation "), "{backend:?}: {first}");
    let copied = object_files(&backups);
    assert!(
        copied >= 3,
        "{backend:?}: original, thumbnail, research slide: {first}"
    );
    let keys_file = entries(&backups.join("keys"));
    assert_eq!(keys_file.len(), 1, "{backend:?}: {keys_file:?}");
    let sealed = std::fs::read_to_string(backups.join("keys").join(&keys_file[0])).unwrap();
    for key in entries(&server.dir.path().join("data/keys")) {
        let secret =
            std::fs::read_to_string(server.dir.path().join("data/keys").join(&key)).unwrap();
        assert!(
            !sealed.contains(secret.trim()),
            "{backend:?}: key {key} in clear"
        );
    }

    // 2. Nothing changed: nothing is copied again.
    server.kill();
    let second = backup(&server, &backups, &pass, "7");
    assert!(second.contains("(0 copied, "), "{backend:?}: {second}");
    assert_eq!(object_files(&backups), copied, "{backend:?}");

    // 3. Keeping two generations removes the oldest, and its keys file.
    let third = backup(&server, &backups, &pass, "2");
    assert!(third.contains("removed generation"), "{backend:?}: {third}");
    assert_eq!(
        entries(&backups.join("generations")).len(),
        2,
        "{backend:?}"
    );
    assert_eq!(entries(&backups.join("keys")).len(), 2, "{backend:?}");
    let original = object_digests(&server).await;

    // A wrong passphrase restores nothing.
    let mut target = TestServer::unstarted(backend);
    let wrong = target.dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();
    let restore = |target: &TestServer, pass: &Path| {
        target.cli(&[
            "admin",
            "restore",
            "--from",
            backups.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
    };
    let refused = restore(&target, wrong.as_path());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "{backend:?}: wrong passphrase accepted"
    );
    assert!(stderr.contains("passphrase"), "{backend:?}: {stderr}");
    assert!(target.database_untouched().await, "{backend:?}");
    assert!(target.clinical_objects().await.is_empty(), "{backend:?}");
    assert!(entries(&target.dir.path().join("data/keys")).is_empty());

    // A dump changed, and its SHA-256 and size changed in the manifest to match: only the
    // sealed keys, which need the passphrase, still vouch for the manifest as it was made.
    let generations = entries(&backups.join("generations"));
    let (older, newest) = (&generations[0], &generations[1]);
    let folder = backups.join("generations").join(newest);
    let manifest_path = folder.join("manifest.json");
    let manifest_bytes = std::fs::read(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let dump_path = folder.join(manifest["database"]["file"].as_str().unwrap());
    let dump_bytes = std::fs::read(&dump_path).unwrap();
    let mut altered = dump_bytes.clone();
    altered.extend_from_slice(b"altered after the backup");
    std::fs::write(&dump_path, &altered).unwrap();
    manifest["database"]["sha256"] = sha256_hex(&altered).into();
    manifest["database"]["size"] = altered.len().into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let tampered = restore(&target, pass.as_path());
    let stderr = String::from_utf8_lossy(&tampered.stderr);
    assert!(
        !tampered.status.success(),
        "{backend:?}: an altered dump was restored"
    );
    assert!(
        stderr.contains("manifest was changed"),
        "{backend:?}: {stderr}"
    );
    assert!(target.database_untouched().await, "{backend:?}");
    assert!(target.clinical_objects().await.is_empty(), "{backend:?}");
    assert!(entries(&target.dir.path().join("data/keys")).is_empty());
    std::fs::write(&dump_path, &dump_bytes).unwrap();
    std::fs::write(&manifest_path, &manifest_bytes).unwrap();

    // The keys file of another generation (same passphrase, same keys) is refused too.
    let other_keys = backups.join("keys").join(format!("{older}.keys.enc"));
    let swapped = target.cli(&[
        "admin",
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--generation",
        newest.as_str(),
        "--keys",
        other_keys.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&swapped.stderr);
    assert!(
        !swapped.status.success(),
        "{backend:?}: another generation's keys were accepted"
    );
    assert!(
        stderr.contains("belongs to generation"),
        "{backend:?}: {stderr}"
    );
    assert!(target.database_untouched().await, "{backend:?}");
    assert!(target.clinical_objects().await.is_empty(), "{backend:?}");
    assert!(entries(&target.dir.path().join("data/keys")).is_empty());

    // The right one rebuilds the platform and checks its audit log.
    let done = restore(&target, pass.as_path());
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{backend:?}: {stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("audit log intact"), "{backend:?}: {stdout}");
    let restored = object_digests(&target).await;
    for (key, digest) in &original {
        assert_eq!(
            restored.get(key),
            Some(digest),
            "{backend:?}: object {key} differs or is missing"
        );
    }
    for key in restored.keys().filter(|k| !original.contains_key(*k)) {
        // Only a checkpoint the restored platform wrote of its own log may be new.
        assert!(key.starts_with("audit/"), "{backend:?}: unexpected {key}");
    }
    let verified = target.cli_ok(&["audit", "verify"]);
    assert!(
        verified.contains("audit log intact"),
        "{backend:?}: {verified}"
    );

    // The restored platform serves the slide and vouches for the report issued before.
    target.start_now();
    let spoke = As {
        server: &target,
        token: spoke_token.clone(),
    };
    let (status, tile) = spoke
        .raw(&format!("/api/v1/slides/{slide}/slide_files/8/0_0.jpeg"))
        .await;
    assert_eq!(status, 200, "{backend:?}: {}", target.log());
    assert!(
        tile.starts_with(&[0xff, 0xd8]),
        "{backend:?}: not a JPEG tile"
    );
    let report = target.cli_ok(&[
        "case",
        "report",
        "--verify",
        pdf.to_str().unwrap(),
        "--server",
        &target.url,
        "--token",
        &spoke_token,
    ]);
    assert!(report.contains("verified"), "{backend:?}: {report}");

    // A platform that is not empty is not overwritten.
    let again = restore(&target, pass.as_path());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{backend:?}: restored over data");
    assert!(stderr.contains("not empty"), "{backend:?}: {stderr}");
}
