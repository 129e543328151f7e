//! The feed: the supervisor's events as they happen, and the outcome of every action
//! taken from the dashboard, newest at the bottom.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, FeedKind, Focus};
use super::{paint, pane};
use crate::event::EventKind;

pub fn draw(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let mut title = " events and actions ".to_owned();
    if app.feed_scroll > 0 {
        title.push_str(&format!("· {} up ", app.feed_scroll));
    }
    let block = pane(app, title, Some(Focus::Feed));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let end = app.feed.len().saturating_sub(app.feed_scroll);
    let start = end.saturating_sub(inner.height as usize);
    let lines: Vec<Line<'_>> = app
        .feed
        .range(start..end)
        .map(|line| {
            let (label, style) = match line.kind {
                FeedKind::Event(kind) => (kind.as_str(), event_style(app, kind)),
                FeedKind::Ok => ("done", paint(app, Color::Green)),
                FeedKind::Failed => (
                    "FAILED",
                    paint(app, Color::Red).add_modifier(Modifier::BOLD),
                ),
                FeedKind::Note => ("note", paint(app, Color::Cyan)),
            };
            let mut spans = vec![
                Span::styled(format!("{} ", line.time), paint(app, Color::DarkGray)),
                Span::styled(format!("{label:<9} "), style),
            ];
            if !line.service.is_empty() {
                spans.push(Span::styled(
                    format!("{} ", line.service),
                    Style::default().add_modifier(Modifier::BOLD),
                ));
            }
            spans.push(Span::raw(line.text.as_str()));
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn event_style(app: &App, kind: EventKind) -> Style {
    match kind {
        EventKind::Ready | EventKind::Healthy | EventKind::Completed => paint(app, Color::Green),
        EventKind::Failed | EventKind::HookFailed => {
            paint(app, Color::Red).add_modifier(Modifier::BOLD)
        }
        EventKind::Unhealthy | EventKind::Exited | EventKind::Restarting => {
            paint(app, Color::Magenta)
        }
        _ => paint(app, Color::Yellow),
    }
}
