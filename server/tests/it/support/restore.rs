//! A platform configured but not started: the empty target that `pathfed admin restore` fills
//! (its own data folder, and on [`Backend::Remote`] its own PostgreSQL database and bucket),
//! then served by [`TestServer::start_now`] to show the restored platform works.

use pathfed_core::config::S3Config;

use super::{Backend, STAGING_DIR_VAR, TestServer, services};

impl TestServer {
    /// A fresh, empty platform on `backend` with no server running: `pathfed` commands
    /// ([`TestServer::cli`]) work on it; [`TestServer::start_now`] starts serving it.
    pub fn unstarted(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = vec![
            (
                "PATHFED_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("PATHFED_LOG".into(), "warn".into()),
            (
                pathfed_core::clock::OFFSET_FILE_VAR.into(),
                dir.path().join("clock-offset").display().to_string(),
            ),
        ];
        let mut s3 = S3Config::default();
        let (database_url, object_store_url) = match backend {
            Backend::Local => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("data/pathfed.db").display()
                ),
                format!("file://{}", dir.path().join("data/objects").display()),
            ),
            Backend::Remote => {
                let pg = services::Postgres::shared();
                let s3_server = services::S3Server::shared();
                let bucket = s3_server.create_bucket("restored");
                s3 = S3Config {
                    endpoint: Some(s3_server.endpoint()),
                    region: Some("us-east-1".into()),
                    access_key_id: Some("testing".into()),
                    secret_access_key: Some("testing".into()),
                    allow_http: true,
                };
                env.extend([
                    ("PATHFED_S3_ENDPOINT".into(), s3_server.endpoint()),
                    ("PATHFED_S3_REGION".into(), "us-east-1".into()),
                    ("PATHFED_S3_ACCESS_KEY_ID".into(), "testing".into()),
                    ("PATHFED_S3_SECRET_ACCESS_KEY".into(), "testing".into()),
                    ("PATHFED_S3_ALLOW_HTTP".into(), "true".into()),
                    (
                        STAGING_DIR_VAR.into(),
                        dir.path().join("data/staging").display().to_string(),
                    ),
                ]);
                (
                    pg.create_database("restored"),
                    format!("s3://{bucket}/objects"),
                )
            }
        };
        env.push(("PATHFED_DATABASE_URL".into(), database_url.clone()));
        env.push(("PATHFED_OBJECT_STORE_URL".into(), object_store_url.clone()));
        Self {
            url: String::new(),
            backend,
            dir,
            env,
            child: None,
            s3,
            object_store_url,
            database_url,
        }
    }

    /// Starts `pathfed serve` on this platform (made by [`TestServer::unstarted`]).
    pub fn start_now(&mut self) {
        self.launch();
    }

    /// Whether nothing was written to this platform's database: no SQLite file, or a
    /// PostgreSQL database without a table.
    pub async fn database_untouched(&self) -> bool {
        match self.backend {
            Backend::Local => !self.dir.path().join("data/pathfed.db").exists(),
            Backend::Remote => {
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&self.database_url)
                    .await
                    .expect("connect to the target database");
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
                )
                .fetch_one(&pool)
                .await
                .expect("count tables");
                let tables: i64 = sqlx::Row::get(&row, "n");
                pool.close().await;
                tables == 0
            }
        }
    }
}
