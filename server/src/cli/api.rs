//! Working through a pathfed server's API: which server and token ([`ServerArgs`]) and a small
//! JSON client ([`Api`]), shared by `case`, `upload`, `research`, `train` and `infer`.

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// Where the server is and who is asking.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The pathfed server, e.g. https://hub.example.org.
    #[arg(long, env = "PATHFED_SERVER")]
    pub server: String,
    /// API token (from `pathfed admin token create`).
    #[arg(long, env = "PATHFED_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// A small client for the case API.
pub struct Api {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Api {
    /// A client for `server` with `token`.
    pub fn new(server: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .context("preparing the HTTP client")?,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string());
        bail!("the server refused ({}): {message}", status.as_u16())
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .send(self.http.get(format!("{}{path}", self.server)))
            .await?;
        response.json().await.context("reading the answer")
    }

    /// GET raw bytes.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .send(self.http.get(format!("{}{path}", self.server)))
            .await?;
        Ok(response
            .bytes()
            .await
            .context("reading the answer")?
            .to_vec())
    }

    /// POST JSON; returns the JSON answer (or null for 204).
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .send(self.http.post(format!("{}{path}", self.server)).json(body))
            .await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        response.json().await.context("reading the answer")
    }

    /// Attaches a slide to a draft case.
    pub async fn attach(&self, case: &str, slide: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/api/v1/cases/{case}/slides"),
            &json!({ "slide_id": slide }),
        )
        .await
        .with_context(|| format!("attaching slide {slide} to case {case}"))?;
        Ok(())
    }
}
