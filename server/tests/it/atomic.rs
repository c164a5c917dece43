//! State changes and the jobs they start commit together: a sign-out whose transaction fails
//! after the report row and before its curation jobs leaves neither, and a retried sign-out
//! leaves both. The failure is injected inside the transaction by a database trigger that
//! refuses new jobs, on both backends.

use pathfed_core::jobs::kinds::{Curate, JobKind as _};
use reqwest::{Method, StatusCode};
use sqlx::Row as _;

use crate::support::people::{read, staff};
use crate::support::{BACKENDS, Backend, TestServer, submit_case, synth_slide};

/// Makes every insert into `jobs` fail, or stops doing so.
async fn refuse_new_jobs(db: &pathfed_core::Db, backend: Backend, refuse: bool) {
    let statements: &[&str] = match (backend, refuse) {
        (Backend::Local, true) => &["CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"],
        (Backend::Local, false) => &["DROP TRIGGER refuse_jobs"],
        (Backend::Remote, true) => &[
            "CREATE FUNCTION refuse_jobs() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_jobs BEFORE INSERT ON jobs \
             FOR EACH ROW EXECUTE FUNCTION refuse_jobs()",
        ],
        (Backend::Remote, false) => &["DROP TRIGGER refuse_jobs ON jobs"],
    };
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
            .execute(db.pool())
            .await
            .unwrap();
    }
}

/// (report rows, curate jobs) of a case.
async fn report_and_jobs(db: &pathfed_core::Db, case: &str) -> (i64, i64) {
    let reports: i64 = sqlx::query("SELECT COUNT(*) AS n FROM case_reports WHERE case_id = $1")
        .bind(case)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    let jobs: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE kind = $1")
        .bind(Curate::NAME)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    (reports, jobs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_out_commits_its_curation_jobs_or_nothing() {
    for backend in BACKENDS {
        // Curation stays queued, so the jobs can be counted.
        let server = TestServer::start_with(backend, &[("PATHFED_RESEARCH_SERVE_WORKERS", "0")]);
        let people = staff(&server);
        let file = synth_slide(server.dir.path(), "atomic.svs", 2048, 1536, 31);
        let (case, slide) = submit_case(&server, &people.spoke.token, &file, "MRN-ATOMIC-1");
        let path = format!("/api/v1/cases/{case}");
        let code = "GAS-G3";
        people
            .first
            .ok(Method::POST, &format!("{path}/claim"), None)
            .await;
        people
            .first
            .ok(
                Method::PUT,
                &format!("{path}/reads/primary"),
                Some(read(code, &slide)),
            )
            .await;
        people
            .second
            .ok(Method::POST, &format!("{path}/double-check"), None)
            .await;
        people
            .second
            .ok(
                Method::PUT,
                &format!("{path}/reads/second"),
                Some(read(code, &slide)),
            )
            .await;

        let db = server.db().await;
        refuse_new_jobs(&db, backend, true).await;
        let (status, body) = people
            .first
            .call(Method::POST, &format!("{path}/sign-out"), None)
            .await;
        assert!(status.is_server_error(), "{backend:?}: {status} {body}");
        assert_eq!(report_and_jobs(&db, &case).await, (0, 0), "{backend:?}");
        let after = people.first.ok(Method::GET, &path, None).await;
        assert_eq!(
            after["status"], "ready_for_sign_out",
            "{backend:?}: {after}"
        );
        let reports: Vec<String> = server
            .clinical_objects()
            .await
            .into_iter()
            .filter(|key| key.contains("/reports/"))
            .collect();
        assert!(
            reports.is_empty(),
            "{backend:?}: report files left: {reports:?}"
        );

        refuse_new_jobs(&db, backend, false).await;
        let (status, body) = people
            .first
            .call(Method::POST, &format!("{path}/sign-out"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(report_and_jobs(&db, &case).await, (1, 1), "{backend:?}");
        let after = people.first.ok(Method::GET, &path, None).await;
        assert_eq!(after["status"], "signed_out", "{backend:?}: {after}");
    }
}
