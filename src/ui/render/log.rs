//! The log pane: the window of the selected service's output, newest at the bottom,
//! following unless scrolled up or paused; wrapped or cut at the pane's edge; the
//! search's matches highlighted. Its text was escaped as it arrived.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Focus, LogEntry};
use super::{paint, pane};

pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let log = &app.log;
    let mut title = format!(
        " log: {} ",
        log.service.as_deref().unwrap_or("(no service)")
    );
    if log.paused {
        title.push_str(&format!("· PAUSED ({} held) ", log.held.len()));
    }
    if log.scroll > 0 {
        title.push_str(&format!("· {} lines up ", log.scroll));
    }
    if log.wrap {
        title.push_str("· wrap ");
    }
    if !log.search.is_empty() {
        title.push_str(&format!("· /{} ", log.search));
    }
    let block = pane(app, title, Some(Focus::Log));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    let width = inner.width.max(1) as usize;
    if log.lines.is_empty() {
        let text = log
            .note
            .clone()
            .unwrap_or_else(|| "no output yet".to_owned());
        frame.render_widget(Paragraph::new(text), inner);
        return;
    }
    let end = log.lines.len().saturating_sub(log.scroll);
    let needle = log.search.to_lowercase();
    let mut rows: Vec<Line<'_>> = Vec::new();
    // From the newest line up, until the pane is full.
    for entry in log.lines.range(..end).rev() {
        let line = render(app, entry, &needle);
        if log.wrap {
            let mut pieces = wrap(line, width);
            while let Some(piece) = pieces.pop() {
                rows.push(piece);
            }
        } else {
            rows.push(line);
        }
        if rows.len() >= height {
            break;
        }
    }
    rows.truncate(height);
    rows.reverse();
    frame.render_widget(Paragraph::new(rows), inner);
}

fn render<'a>(app: &App, entry: &'a LogEntry, needle: &str) -> Line<'a> {
    let time_style = paint(app, Color::DarkGray);
    let text_style = if entry.stderr {
        paint(app, Color::LightRed)
    } else {
        Style::default()
    };
    let mut spans = vec![Span::styled(format!("{} ", entry.time), time_style)];
    let lower = entry.text.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII: highlight only when it did not.
    match (!needle.is_empty() && lower.len() == entry.text.len())
        .then(|| lower.find(needle))
        .flatten()
    {
        Some(at) => {
            let hit = Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD);
            spans.push(Span::styled(&entry.text[..at], text_style));
            spans.push(Span::styled(&entry.text[at..at + needle.len()], hit));
            spans.push(Span::styled(&entry.text[at + needle.len()..], text_style));
        }
        None => spans.push(Span::styled(entry.text.as_str(), text_style)),
    }
    Line::from(spans)
}

/// Cuts a line into rows of at most `width` characters.
fn wrap(line: Line<'_>, width: usize) -> Vec<Line<'_>> {
    let mut rows: Vec<Line<'_>> = vec![Line::default()];
    let mut used = 0;
    for span in line.spans {
        let style = span.style;
        let mut piece = String::new();
        for c in span.content.chars() {
            if used == width {
                if let Some(row) = rows.last_mut() {
                    row.spans
                        .push(Span::styled(std::mem::take(&mut piece), style));
                }
                rows.push(Line::default());
                used = 0;
            }
            piece.push(c);
            used += 1;
        }
        if let Some(row) = rows.last_mut() {
            row.spans.push(Span::styled(piece, style));
        }
    }
    rows
}
