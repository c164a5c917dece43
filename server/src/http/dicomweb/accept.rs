//! Content negotiation (PS3.18 8.7): what each DICOMweb resource can be given as, read from the
//! request's `Accept` header. A request without one gets the resource's default; one whose every
//! media range names something this server does not give is answered 406 with the JSON error
//! body, so a client that probes transfer syntaxes (as wsidicom does) learns which it may ask for.

use axum::http::{HeaderMap, StatusCode, header};
use pathfed_core::http::ApiError;

use super::json::JPEG_BASELINE;

/// Media ranges read from one request; more are ignored.
const MAX_RANGES: usize = 64;

/// One media range of an `Accept` header, its type lower-cased and its parameters unquoted.
#[derive(Debug, Clone, PartialEq)]
struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
    q: f32,
}

impl MediaRange {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The formats of a rendered image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rendered {
    /// `image/jpeg`, the default.
    Jpeg,
    /// `image/png`.
    Png,
}

impl Rendered {
    /// The answer's media type.
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

fn not_acceptable(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "dicomweb_not_acceptable",
        message,
    )
}

/// Search results and metadata: `application/dicom+json` (or plain JSON, or any type).
pub(super) fn json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ranges) = ranges(headers) else {
        return Ok(());
    };
    let acceptable = ranges.iter().filter(|r| r.q > 0.0).any(|r| {
        matches!(
            r.essence.as_str(),
            "*/*" | "application/*" | "application/dicom+json" | "application/json"
        )
    });
    if acceptable {
        Ok(())
    } else {
        Err(not_acceptable(
            "search results and metadata are given as application/dicom+json only",
        ))
    }
}

/// How frames are labelled in a multipart answer; the bytes are the same JPEG either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FramePart {
    /// `image/jpeg`, the default.
    Jpeg,
    /// `application/octet-stream` asked for with `transfer-syntax=*` ("as stored"), which
    /// dicom-microscopy-viewer (and so Slim) sends; the part's type names the syntax.
    OctetStream,
}

impl FramePart {
    /// The media type inside the multipart answer's `type` parameter.
    pub(super) fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::OctetStream => "application/octet-stream",
        }
    }
}

/// Frames: `multipart/related; type="image/jpeg"` in JPEG baseline (its default transfer
/// syntax), `type="application/octet-stream"` with any transfer syntax (`*`), or any type; the
/// most preferred range the server can answer decides.
pub(super) fn jpeg_frames(headers: &HeaderMap) -> Result<FramePart, ApiError> {
    let Some(mut ranges) = ranges(headers) else {
        return Ok(FramePart::Jpeg);
    };
    // Stable: equally preferred ranges keep the client's order.
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    let answer = ranges.iter().filter(|r| r.q > 0.0).find_map(|r| {
        if r.essence == "*/*" {
            return Some(FramePart::Jpeg);
        }
        if r.essence != "multipart/related" {
            return None;
        }
        let syntax = r.param("transfer-syntax");
        // A missing `type` is taken as any type: every frame is a JPEG.
        match r.param("type").map(str::to_ascii_lowercase).as_deref() {
            None | Some("image/jpeg" | "image/*" | "*/*")
                if syntax.is_none_or(|ts| ts == "*" || ts == JPEG_BASELINE) =>
            {
                Some(FramePart::Jpeg)
            }
            // Without `*` the octet-stream default is uncompressed little endian, never given.
            Some("application/octet-stream") if syntax == Some("*") => Some(FramePart::OctetStream),
            _ => None,
        }
    });
    answer.ok_or_else(|| {
        not_acceptable(
            "frames are given as multipart/related; type=\"image/jpeg\" in JPEG baseline \
             (transfer syntax 1.2.840.10008.1.2.4.50), or as type=\"application/octet-stream\" \
             with transfer-syntax=* (the same JPEG), only",
        )
    })
}

/// Rendered images: the most preferred of `image/jpeg` and `image/png`; JPEG for any image.
pub(super) fn rendered(headers: &HeaderMap) -> Result<Rendered, ApiError> {
    let Some(mut ranges) = ranges(headers) else {
        return Ok(Rendered::Jpeg);
    };
    // Stable: equally preferred ranges keep the client's order.
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    for range in ranges.iter().filter(|r| r.q > 0.0) {
        match range.essence.as_str() {
            "image/jpeg" | "image/*" | "*/*" => return Ok(Rendered::Jpeg),
            "image/png" => return Ok(Rendered::Png),
            _ => {}
        }
    }
    Err(not_acceptable(
        "rendered images are given as image/jpeg or image/png only",
    ))
}

/// Every media range of the request's `Accept` headers; `None` when it sent none (or only
/// empty ones), which accepts anything.
fn ranges(headers: &HeaderMap) -> Option<Vec<MediaRange>> {
    let mut sent = false;
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else {
            // A value that is not text names nothing this server gives.
            sent = true;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        sent = true;
        for item in split_unquoted(text, ',') {
            if out.len() == MAX_RANGES {
                break;
            }
            if let Some(range) = parse_range(item) {
                out.push(range);
            }
        }
    }
    sent.then_some(out)
}

/// `type/subtype; name=value; q=0.5`, or `None` for what does not parse.
fn parse_range(text: &str) -> Option<MediaRange> {
    let mut pieces = split_unquoted(text, ';').into_iter();
    let essence = pieces.next()?.trim().to_ascii_lowercase();
    if !essence.contains('/') || essence.contains(char::is_whitespace) {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1.0f32;
    for piece in pieces {
        let Some((name, value)) = piece.split_once('=') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"');
        if name == "q" {
            q = value
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        } else {
            params.push((name, value.to_string()));
        }
    }
    Some(MediaRange { essence, params, q })
}

/// Splits at `separator` where it is not inside double quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (at, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..at]);
            start = at + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn refused<T>(result: Result<T, ApiError>) -> bool {
        result.is_err_and(|e| {
            e.status == StatusCode::NOT_ACCEPTABLE && e.code == "dicomweb_not_acceptable"
        })
    }

    #[test]
    fn what_dicomweb_clients_send_is_accepted() {
        // dicomweb-client's metadata and search requests, and its frame requests with and
        // without a transfer syntax; a plain browser; no header at all.
        assert!(json(&accept(&["application/dicom+json, application/json"])).is_ok());
        assert!(json(&accept(&["*/*"])).is_ok());
        assert!(json(&HeaderMap::new()).is_ok());
        for frames in [
            "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.50",
            "multipart/related; type=\"image/jpeg\"",
            "multipart/related; type=\"*/*\"",
            "multipart/related; type=image/jpeg; transfer-syntax=*",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1, multipart/related; type=\"image/jpeg\"",
            "*/*",
        ] {
            assert_eq!(
                jpeg_frames(&accept(&[frames])).ok(),
                Some(FramePart::Jpeg),
                "{frames}"
            );
        }
        assert_eq!(jpeg_frames(&HeaderMap::new()).ok(), Some(FramePart::Jpeg));
        // dicom-microscopy-viewer's frame request: octet-stream in the stored syntax; a client
        // preferring it over JPEG gets it, one preferring JPEG gets JPEG.
        for (frames, part) in [
            (
                "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
                FramePart::OctetStream,
            ),
            (
                "multipart/related; type=\"image/jpeg\"; q=0.5, multipart/related; type=application/octet-stream; transfer-syntax=*",
                FramePart::OctetStream,
            ),
            (
                "multipart/related; type=application/octet-stream; transfer-syntax=*; q=0.5, multipart/related; type=\"image/jpeg\"",
                FramePart::Jpeg,
            ),
        ] {
            assert_eq!(jpeg_frames(&accept(&[frames])).ok(), Some(part), "{frames}");
        }
    }

    #[test]
    fn what_cannot_be_given_is_refused_with_406() {
        assert!(refused(json(&accept(&["application/dicom+xml"]))));
        assert!(refused(json(&accept(&[
            "multipart/related; type=\"application/dicom\""
        ]))));
        assert!(refused(json(&accept(&["application/json;q=0"]))));
        for frames in [
            "multipart/related; type=\"application/octet-stream\"",
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1",
            "multipart/related; type=\"image/jp2\"; transfer-syntax=1.2.840.10008.1.2.4.90",
            "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.70",
            "image/jpeg",
            "multipart/related; type=\"image/jpeg\"; q=0",
            "nonsense",
        ] {
            assert!(refused(jpeg_frames(&accept(&[frames]))), "{frames}");
        }
    }

    #[test]
    fn rendered_images_follow_the_preference() {
        let format = |value: &str| rendered(&accept(&[value])).ok();
        assert_eq!(format("image/png"), Some(Rendered::Png));
        assert_eq!(format("image/jpeg, image/png"), Some(Rendered::Jpeg));
        assert_eq!(format("image/jpeg;q=0.5, image/png"), Some(Rendered::Png));
        assert_eq!(format("image/*"), Some(Rendered::Jpeg));
        assert_eq!(format("text/html, */*;q=0.1"), Some(Rendered::Jpeg));
        assert_eq!(rendered(&HeaderMap::new()).ok(), Some(Rendered::Jpeg));
        assert!(
            rendered(&accept(&["image/gif"]))
                .is_err_and(|e| e.status == StatusCode::NOT_ACCEPTABLE)
        );
    }

    #[test]
    fn quoted_separators_stay_inside_their_range() {
        assert_eq!(
            split_unquoted("a; t=\"x,y\", b", ','),
            vec!["a; t=\"x,y\"", " b"]
        );
        let range = parse_range("Multipart/Related; Type=\"image/jpeg\"; q=0.8").unwrap();
        assert_eq!(range.essence, "multipart/related");
        assert_eq!(range.param("type"), Some("image/jpeg"));
        assert!((range.q - 0.8).abs() < 1e-6);
        assert_eq!(parse_range("image/png; q=2"), None);
    }
}
