//! The audit chain on both databases: `pathfed audit verify` passes on an untouched log and
//! fails, naming the row, after any row is edited or removed. (Recomputed chains, removed
//! newest rows, checkpoints and the review API: `audit_chain.rs`.)

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use crate::support::{BACKENDS, TestServer};

#[tokio::test(flavor = "multi_thread")]
async fn tampering_with_any_row_is_detected_and_named() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        for i in 0..4 {
            server.user("Hub", "hub", &format!("user{i}"), "pathologist");
        }
        let ok = server.cli_ok(&["audit", "verify"]);
        assert!(ok.starts_with("audit log intact"), "{ok}");
        let rows: i64 = ok.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(rows >= 8, "{ok}");

        let db = server.db().await;
        let verify_fails_at = |seq: i64| {
            let out = server.cli(&["audit", "verify"]);
            assert!(!out.status.success(), "{backend:?}: tampering not detected");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("row {seq}")),
                "{backend:?}: {stderr}"
            );
        };
        // Edit a field of row 3.
        sqlx::query("UPDATE audit_log SET detail = 'edited' WHERE seq = 3")
            .execute(db.pool())
            .await
            .unwrap();
        verify_fails_at(3);
        drop(server);

        // A removed row.
        let server = TestServer::start(backend);
        for i in 0..3 {
            server.user("Hub", "hub", &format!("user{i}"), "pathologist");
        }
        let db = server.db().await;
        sqlx::query("DELETE FROM audit_log WHERE seq = 4")
            .execute(db.pool())
            .await
            .unwrap();
        let out = server.cli(&["audit", "verify"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("row 5"),
            "{backend:?}: gap named"
        );

        let server = TestServer::start(backend);
        server.user("Hub", "hub", "a", "pathologist");
        let db = server.db().await;
        // Rewriting a row's hash to match its edited contents still breaks the next link.
        sqlx::query("UPDATE audit_log SET actor = 'mallory', hash = 'ff' WHERE seq = 1")
            .execute(db.pool())
            .await
            .unwrap();
        let out = server.cli(&["audit", "verify"]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("row 1"),
            "{backend:?}"
        );
    }
}
