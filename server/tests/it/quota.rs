//! Upload quotas per hospital (issue 19), on both backends: an admin sets a hospital's quota
//! from the command line; an upload within it works; the next one that would pass it is
//! refused with 413 `quota_exceeded` and a message giving the usage and the limit when the
//! upload is created, before any byte is sent; another hospital is not affected; a quota
//! lowered while an upload is under way refuses it when it completes; the CLI reports usage; a
//! zip counts as the files it unpacks to, refused before any of them is stored.

use base64::Engine;
use serde_json::Value;

use crate::support::{BACKENDS, TestServer, client, sha256_hex, synth_slide};
use crate::tus::{TUS, create, patch};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `POST /api/v1/uploads` for a file of `len` bytes: the creation request, which carries no
/// byte of the file.
async fn try_create(
    server: &TestServer,
    token: &str,
    len: usize,
    name: &str,
    sha: &str,
) -> reqwest::Response {
    client()
        .post(format!("{}/api/v1/uploads", server.url))
        .bearer_auth(token)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", len)
        .header(
            "Upload-Metadata",
            format!("filename {},sha256 {}", b64(name), b64(sha)),
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_past_a_hospitals_quota_are_refused_before_any_byte() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Quota Spoke", "spoke", "quota_sub", "submitter");
        let other = server.user("Other Spoke", "spoke", "other_sub", "submitter");
        let first = std::fs::read(synth_slide(server.dir.path(), "q1.svs", 1200, 900, 1)).unwrap();
        let second = std::fs::read(synth_slide(server.dir.path(), "q2.svs", 1200, 900, 2)).unwrap();
        // Room for the first slide and half another, not for two.
        let quota = first.len() + first.len() / 2;
        assert!(second.len() > first.len() / 2);
        let set = server.cli_ok(&[
            "admin",
            "hospital",
            "quota",
            "Quota Spoke",
            "--bytes",
            &quota.to_string(),
        ]);
        assert!(
            set.contains(&format!("(0 of {quota} bytes)")),
            "{backend:?}: {set}"
        );

        // Within the quota: uploaded and registered.
        let url = create(&server, &token, first.len(), "q1.svs", &sha256_hex(&first)).await;
        let done = patch(&url, &token, 0, &first, None).await;
        assert_eq!(done.status(), 204, "{backend:?}");
        assert!(
            done.headers().contains_key("pathfed-slide-id"),
            "{backend:?}"
        );
        let usage = server.cli_ok(&["admin", "hospital", "quota", "Quota Spoke"]);
        assert!(
            usage.contains(&format!("({} of {quota} bytes)", first.len())),
            "{backend:?}: {usage}"
        );
        let listed = server.cli_ok(&["admin", "hospital", "list"]);
        let line = listed
            .lines()
            .find(|l| l.contains("\tQuota Spoke\t"))
            .unwrap();
        assert!(line.contains("iB used"), "{backend:?}: {line}");

        // Past it: refused when the upload is created, with what is used and allowed.
        let sha = sha256_hex(&second);
        let refused = try_create(&server, &token, second.len(), "q2.svs", &sha).await;
        assert_eq!(refused.status(), 413, "{backend:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "quota_exceeded",
            "{backend:?}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("upload quota")
                && message.contains(" used")
                && message.contains("left"),
            "{backend:?}: {message}"
        );
        assert!(
            server.staging_files().is_empty(),
            "{backend:?}: bytes reserved"
        );
        let audit = server.cli_ok(&["audit", "tail", "-n", "20"]);
        assert!(
            audit
                .lines()
                .any(|l| l.contains("upload.create") && l.contains("refused")),
            "{backend:?}: {audit}"
        );

        // Another hospital's quota is its own.
        let elsewhere = try_create(&server, &other, second.len(), "q2.svs", &sha).await;
        assert_eq!(elsewhere.status(), 201, "{backend:?}");

        // Raised, the same upload starts; lowered again while it runs, it is refused when it
        // completes, and nothing of it stays.
        server.cli_ok(&["admin", "hospital", "quota", "Quota Spoke", "--gib", "1"]);
        let url = create(&server, &token, second.len(), "q2.svs", &sha).await;
        server.cli_ok(&[
            "admin",
            "hospital",
            "quota",
            "Quota Spoke",
            "--bytes",
            &first.len().to_string(),
        ]);
        let late = patch(&url, &token, 0, &second, None).await;
        assert_eq!(late.status(), 413, "{backend:?}");
        let body: Value = late.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "quota_exceeded",
            "{backend:?}: {body}"
        );
        let usage = server.cli_ok(&["admin", "hospital", "quota", "Quota Spoke"]);
        assert!(
            usage.contains(&format!("({} of {} bytes)", first.len(), first.len())),
            "{backend:?}: the refused upload still counts: {usage}"
        );

        // Without a quota, anything the size limit allows goes.
        let none = server.cli_ok(&["admin", "hospital", "quota", "Quota Spoke", "--none"]);
        assert!(none.contains("no upload quota"), "{backend:?}: {none}");
        let url = create(&server, &token, second.len(), "q2.svs", &sha).await;
        let done = patch(&url, &token, 0, &second, None).await;
        assert_eq!(done.status(), 204, "{backend:?}");
    }
}

/// A zip of `entries`, deflated.
fn deflated_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zip_counts_against_the_quota_as_unpacked() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Zip Spoke", "spoke", "zip_sub", "submitter");
        let slide = std::fs::read(synth_slide(server.dir.path(), "z.svs", 1200, 900, 3)).unwrap();
        // Notes of two letters at random: about 1 bit a byte, so they deflate some 6 to 8 times,
        // well under the zip-bomb ratio, yet unpack to far more than the zip's size.
        let mut state: u32 = 12345;
        let notes: Vec<u8> = (0..(3 << 20))
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if (state >> 30) & 1 == 0 { b'a' } else { b'b' }
            })
            .collect();
        let zip = deflated_zip(&[("z.svs", slide.as_slice()), ("notes.txt", notes.as_slice())]);
        let unpacked = slide.len() + notes.len();
        assert!(
            zip.len() < unpacked / 2,
            "{backend:?}: the zip is {} bytes",
            zip.len()
        );
        let sha = sha256_hex(&zip);

        // Room for the zip as sent, not for what it unpacks to.
        let quota = zip.len();
        server.cli_ok(&[
            "admin",
            "hospital",
            "quota",
            "Zip Spoke",
            "--bytes",
            &quota.to_string(),
        ]);
        let url = create(&server, &token, zip.len(), "z.zip", &sha).await;
        let refused = patch(&url, &token, 0, &zip, None).await;
        assert_eq!(refused.status(), 413, "{backend:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "quota_exceeded",
            "{backend:?}: {body}"
        );
        let db = server.db().await;
        assert_eq!(
            pathfed_ingest::slides::count(&db).await.unwrap(),
            0,
            "{backend:?}: a slide was stored"
        );
        assert!(
            server.clinical_objects().await.is_empty(),
            "{backend:?}: objects left: {:?}",
            server.clinical_objects().await
        );
        assert!(
            server.staging_files().is_empty(),
            "{backend:?}: staging left"
        );
        let usage = server.cli_ok(&["admin", "hospital", "quota", "Zip Spoke"]);
        assert!(
            usage.contains(&format!("(0 of {quota} bytes)")),
            "{backend:?}: {usage}"
        );

        // With room for the unpacked files it is stored, and counted at that size.
        server.cli_ok(&[
            "admin",
            "hospital",
            "quota",
            "Zip Spoke",
            "--bytes",
            &unpacked.to_string(),
        ]);
        let url = create(&server, &token, zip.len(), "z.zip", &sha).await;
        let done = patch(&url, &token, 0, &zip, None).await;
        assert_eq!(done.status(), 204, "{backend:?}");
        let usage = server.cli_ok(&["admin", "hospital", "quota", "Zip Spoke"]);
        assert!(
            usage.contains(&format!("({unpacked} of {unpacked} bytes)")),
            "{backend:?}: {usage}"
        );
    }
}
