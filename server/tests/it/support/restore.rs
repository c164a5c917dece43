//! A platform configured but not started: the empty target that `pathfed admin restore` fills
//! (its own data folder, and on [`Backend::Remote`] its own PostgreSQL database and bucket),
//! then served by [`TestServer::start_now`] to show the restored platform works.

use super::{Backend, TestServer};

impl TestServer {
    /// A fresh, empty platform on `backend` with no server running: `pathfed` commands
    /// ([`TestServer::cli`]) work on it; [`TestServer::start_now`] starts serving it.
    pub fn unstarted(backend: Backend) -> Self {
        Self::configured(backend, "restored", &[])
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
