//! The signed report as HTML (for the browser) and PDF (for the spoke's records), both drawn
//! from the same [`ReportContent`] and both showing its SHA-256.
//!
//! The PDF uses the standard Helvetica fonts, which every reader has, so no font file ships
//! with the program; characters outside Latin-1 print as `?` in the PDF (the HTML shows them).

use maud::{DOCTYPE, Markup, html};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::report_content::ReportContent;

/// The marker `pathfed case report --verify` looks for in a PDF's keywords.
pub const PDF_MARKER: &str = "pathfed-report";

/// The keywords line naming the report: case, version and content hash.
pub fn pdf_keywords(content: &ReportContent, content_hash: &str) -> String {
    format!(
        "{PDF_MARKER} case={} version={} content-sha256={content_hash}",
        content.case_id, content.version
    )
}

/// A time as an HTTP date (`Tue, 24 Nov 2026 21:37:31 GMT`): unambiguous across locales.
fn when(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    httpdate::fmt_http_date(at)
}

/// The report as a standalone HTML page.
pub fn html(content: &ReportContent, content_hash: &str) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Pathology report " (content.case_id) " v" (content.version) }
                style { (CSS) }
            }
            body {
                h1 { "Pathology consultation report" }
                p.meta {
                    "Case " code { (content.case_id) } " · version " (content.version)
                    " · " (content.spoke) " → " (content.hub)
                }
                @if let Some(reason) = &content.amendment_reason {
                    p.amended { strong { "Amended report. " } "Reason: " (reason) }
                }
                h2 { "Case" }
                table {
                    tr { th { "Patient id" } td { (content.patient_id) } }
                    tr { th { "Age band / sex" } td { (content.age_band) " / " (content.sex) } }
                    tr { th { "Organ" } td { (content.organ) } }
                    tr { th { "Specimen" } td { (content.specimen) } }
                    tr { th { "Clinical question" } td.text { (content.clinical_question) } }
                    tr { th { "Urgency" } td { (content.urgency) } }
                    tr { th { "Submitted" } td { (when(content.submitted_at)) } }
                }
                h2 { "Slides" }
                table {
                    tr { th { "Slide" } th { "File" } th { "Size (px)" } th { "µm/px" } }
                    @for slide in &content.slides {
                        tr {
                            td { code { (slide.id) } }
                            td { (slide.filename) }
                            td { (slide.width) " × " (slide.height) }
                            td { (slide.mpp.map(|m| format!("{m:.3}")).unwrap_or_else(|| "—".into())) }
                        }
                    }
                }
                h2 { "Final diagnosis" }
                p.final {
                    strong { (content.final_diagnosis.label) } " (" code { (content.final_diagnosis.code) } ")"
                }
                @if !content.final_diagnosis.findings.is_empty() {
                    p.text { (content.final_diagnosis.findings) }
                }
                p.meta {
                    @if content.concordant {
                        "Double-check concordant."
                    } @else {
                        "Reads discordant; adjudicated by " (content.final_diagnosis.decided_by.as_deref().unwrap_or("—")) "."
                        @if !content.final_diagnosis.note.is_empty() { " " (content.final_diagnosis.note) }
                    }
                }
                h2 { "Reads" }
                @for read in &content.reads {
                    h3 { (read.kind_name) " read — " (read.reader) ", " (when(read.entered_at)) }
                    p { strong { (read.label) } " (" code { (read.code) } ")" }
                    @if !read.findings.is_empty() { p.text { (read.findings) } }
                    @for slide in &read.slides {
                        p.slide {
                            "Slide " code { (slide.slide_id) } ": "
                            (slide.label.as_deref().unwrap_or("—"))
                            @if !slide.findings.is_empty() { " — " (slide.findings) }
                        }
                    }
                }
                h2 { "Sign-out" }
                p { "Signed out by " strong { (content.signed_by) } " on " (when(content.signed_at)) "." }
                p.hash { "Report SHA-256: " code { (content_hash) } }
                @if let Some(previous) = &content.supersedes_hash {
                    p.hash { "Supersedes the report with SHA-256 " code { (previous) } }
                }
            }
        }
    };
    page.into_string()
}

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d2430}\
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ccd;margin-top:1.6rem}h3{font-size:1rem;margin-bottom:.2rem}\
table{border-collapse:collapse}th,td{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}\
.text{white-space:pre-wrap}.meta{color:#556}.amended{background:#fff4d6;padding:.4rem}.final{font-size:1.1rem}\
.hash code{font-size:.8rem;word-break:break-all}";

/// Helvetica advance widths (1/1000 em) for ASCII 32..=126, from the standard font metrics.
const HELVETICA_WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Bold glyphs are wider; this factor keeps bold lines inside the margin.
const BOLD_FACTOR: f32 = 1.1;

fn text_width(text: &str, size: f32, bold: bool) -> f32 {
    let units: u32 = text
        .chars()
        .map(|c| {
            let code = c as u32;
            if (32..=126).contains(&code) {
                u32::from(HELVETICA_WIDTHS[(code - 32) as usize])
            } else {
                667
            }
        })
        .sum();
    let width = units as f32 * size / 1000.0;
    if bold { width * BOLD_FACTOR } else { width }
}

/// Text as WinAnsi bytes for the standard fonts; anything else becomes `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c as u32 {
            code @ (0x20..=0x7e | 0xa0..=0xff) => code as u8,
            _ => b'?',
        })
        .collect()
}

/// Splits text into lines no wider than `width` points, keeping its own line breaks.
fn wrap(text: &str, size: f32, bold: bool, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if text_width(&candidate, size, bold) <= width || line.is_empty() {
                line = candidate;
            } else {
                lines.push(std::mem::take(&mut line));
                line = word.to_string();
            }
            // A single word wider than the line is cut.
            while text_width(&line, size, bold) > width && line.chars().count() > 1 {
                let mut head = String::new();
                for c in line.chars() {
                    if text_width(&format!("{head}{c}"), size, bold) > width {
                        break;
                    }
                    head.push(c);
                }
                let rest = line[head.len()..].to_string();
                lines.push(head);
                line = rest;
            }
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;

/// Lays text out top to bottom over as many A4 pages as it needs.
struct Pages {
    pages: Vec<Content>,
    y: f32,
}

impl Pages {
    fn new() -> Self {
        Self {
            pages: vec![Content::new()],
            y: PAGE_HEIGHT - MARGIN,
        }
    }

    fn line(&mut self, text: &str, size: f32, bold: bool, indent: f32) {
        let leading = size * 1.35;
        if self.y - leading < MARGIN {
            self.pages.push(Content::new());
            self.y = PAGE_HEIGHT - MARGIN;
        }
        self.y -= leading;
        let font = if bold { Name(b"F2") } else { Name(b"F1") };
        let bytes = win_ansi(text);
        if let Some(page) = self.pages.last_mut() {
            page.begin_text()
                .set_font(font, size)
                .next_line(MARGIN + indent, self.y)
                .show(Str(&bytes))
                .end_text();
        }
    }

    fn paragraph(&mut self, text: &str, size: f32, bold: bool, indent: f32) {
        let width = PAGE_WIDTH - 2.0 * MARGIN - indent;
        for line in wrap(text, size, bold, width) {
            self.line(&line, size, bold, indent);
        }
    }

    fn field(&mut self, name: &str, value: &str) {
        self.paragraph(&format!("{name}: {value}"), 10.0, false, 0.0);
    }

    fn heading(&mut self, text: &str) {
        self.y -= 8.0;
        self.line(text, 13.0, true, 0.0);
        self.y -= 2.0;
    }
}

/// The report as a PDF document.
pub fn pdf(content: &ReportContent, content_hash: &str) -> Vec<u8> {
    let mut pages = Pages::new();
    pages.line("Pathology consultation report", 18.0, true, 0.0);
    pages.paragraph(
        &format!(
            "Case {} - version {} - {} to {}",
            content.case_id, content.version, content.spoke, content.hub
        ),
        10.0,
        false,
        0.0,
    );
    if let Some(reason) = &content.amendment_reason {
        pages.paragraph(
            &format!("AMENDED REPORT. Reason: {reason}"),
            10.0,
            true,
            0.0,
        );
    }
    pages.heading("Case");
    pages.field("Patient id", &content.patient_id);
    pages.field(
        "Age band / sex",
        &format!("{} / {}", content.age_band, content.sex),
    );
    pages.field("Organ", &content.organ);
    pages.field("Specimen", &content.specimen);
    pages.field("Clinical question", &content.clinical_question);
    pages.field("Urgency", &content.urgency);
    pages.field("Submitted", &when(content.submitted_at));
    pages.heading("Slides");
    for slide in &content.slides {
        let mpp = slide
            .mpp
            .map(|m| format!("{m:.3} um/px"))
            .unwrap_or_else(|| "MPP unknown".into());
        pages.paragraph(
            &format!(
                "{} - {} - {} x {} px - {mpp}",
                slide.id, slide.filename, slide.width, slide.height
            ),
            10.0,
            false,
            0.0,
        );
    }
    pages.heading("Final diagnosis");
    pages.paragraph(
        &format!(
            "{} ({})",
            content.final_diagnosis.label, content.final_diagnosis.code
        ),
        12.0,
        true,
        0.0,
    );
    if !content.final_diagnosis.findings.is_empty() {
        pages.paragraph(&content.final_diagnosis.findings, 10.0, false, 0.0);
    }
    if content.concordant {
        pages.paragraph("Double-check concordant.", 10.0, false, 0.0);
    } else {
        pages.paragraph(
            &format!(
                "Reads discordant; adjudicated by {}. {}",
                content.final_diagnosis.decided_by.as_deref().unwrap_or("-"),
                content.final_diagnosis.note
            ),
            10.0,
            false,
            0.0,
        );
    }
    pages.heading("Reads");
    for read in &content.reads {
        pages.paragraph(
            &format!(
                "{} read - {}, {}",
                read.kind_name,
                read.reader,
                when(read.entered_at)
            ),
            10.0,
            true,
            0.0,
        );
        pages.paragraph(
            &format!("{} ({})", read.label, read.code),
            10.0,
            false,
            12.0,
        );
        if !read.findings.is_empty() {
            pages.paragraph(&read.findings, 10.0, false, 12.0);
        }
        for slide in &read.slides {
            pages.paragraph(
                &format!(
                    "Slide {}: {}{}",
                    slide.slide_id,
                    slide.label.as_deref().unwrap_or("-"),
                    if slide.findings.is_empty() {
                        String::new()
                    } else {
                        format!(" - {}", slide.findings)
                    }
                ),
                9.0,
                false,
                12.0,
            );
        }
    }
    pages.heading("Sign-out");
    pages.paragraph(
        &format!(
            "Signed out by {} on {}.",
            content.signed_by,
            when(content.signed_at)
        ),
        10.0,
        false,
        0.0,
    );
    pages.paragraph(&format!("Report SHA-256: {content_hash}"), 8.0, false, 0.0);
    if let Some(previous) = &content.supersedes_hash {
        pages.paragraph(&format!("Supersedes SHA-256: {previous}"), 8.0, false, 0.0);
    }
    assemble(pages.pages, content, content_hash)
}

fn assemble(contents: Vec<Content>, content: &ReportContent, content_hash: &str) -> Vec<u8> {
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 6;
    let page_ids: Vec<Ref> = (0..contents.len())
        .map(|i| Ref::new(first_page + 2 * i as i32))
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(page_ids.len() as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    let total = contents.len();
    for (index, (mut body, page_id)) in contents.into_iter().zip(&page_ids).enumerate() {
        let stream_id = Ref::new(page_id.get() + 1);
        let footer = format!(
            "Case {} v{} - page {} of {total} - SHA-256 {}...",
            content.case_id,
            content.version,
            index + 1,
            &content_hash[..16.min(content_hash.len())]
        );
        body.begin_text()
            .set_font(Name(b"F1"), 7.0)
            .next_line(MARGIN, MARGIN / 2.0)
            .show(Str(&win_ansi(&footer)))
            .end_text();
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
            .parent(tree)
            .contents(stream_id);
        let mut resources = page.resources();
        resources
            .fonts()
            .pair(Name(b"F1"), regular)
            .pair(Name(b"F2"), bold);
        resources.finish();
        page.finish();
        pdf.stream(stream_id, &body.finish());
    }
    pdf.document_info(info)
        .title(TextStr(&format!(
            "Pathology report {} v{}",
            content.case_id, content.version
        )))
        .subject(TextStr("Pathology consultation report"))
        .keywords(TextStr(&pdf_keywords(content, content_hash)))
        .creator(TextStr("pathfed"));
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_respects_the_width_and_keeps_words() {
        let text = "Chronic active gastritis with intestinal metaplasia; no dysplasia seen in the sampled mucosa.";
        let lines = wrap(text, 10.0, false, 150.0);
        assert!(lines.len() > 2);
        for line in &lines {
            assert!(text_width(line, 10.0, false) <= 150.0, "{line}");
        }
        assert_eq!(lines.join(" "), text);
        let long = "x".repeat(200);
        let cut = wrap(&long, 10.0, false, 100.0);
        assert!(cut.iter().all(|l| text_width(l, 10.0, false) <= 100.0));
        assert_eq!(cut.concat(), long);
    }

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(when(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn text_outside_latin1_is_replaced() {
        assert_eq!(win_ansi("µm 위"), vec![0xb5, b'm', b' ', b'?']);
    }
}
