//! Drawing one frame from the [`App`]: the header, the connection banner, the panes of
//! the current view, the footer with the keys, and any overlay. A terminal smaller than
//! the layout needs gets a message saying so instead of a broken layout.

mod detail;
mod feed;
mod log;
mod overlay;
mod table;
mod tree;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::app::{App, Focus, Link, View};
use crate::supervisor::Phase;

/// The smallest terminal the layout fits in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;

/// Draws everything.
pub fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let lost = matches!(app.link, Link::Lost { .. });
    let [header, banner, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(lost)),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(app)), header);
    if let Link::Lost { reason, since } = &app.link {
        let text = format!(
            " supervisor unreachable for {}s, reconnecting: {}",
            since.elapsed().as_secs(),
            super::text::escaped(reason)
        );
        let style = paint(app, Color::Red).add_modifier(Modifier::REVERSED | Modifier::BOLD);
        frame.render_widget(Paragraph::new(Line::styled(text, style)), banner);
    }
    let [upper, lower] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
    match app.view {
        View::Table => table::draw(frame, app, upper),
        View::Detail => detail::draw(frame, app, upper),
        View::Tree => tree::draw(frame, app, upper),
    }
    let [left, right] = if lower.width >= 100 {
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(lower)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(lower)
    };
    log::draw(frame, app, left);
    feed::draw(frame, app, right);
    frame.render_widget(Paragraph::new(footer_line(app)), footer);
    overlay::draw(frame, app, area);
}

fn too_small(frame: &mut Frame<'_>, area: Rect) {
    let text = format!(
        "The terminal is too small: {}x{}. muster ui needs at least {MIN_WIDTH}x{MIN_HEIGHT}; \
         enlarge the window, or press q to quit.",
        area.width, area.height
    );
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

fn header_line(app: &App) -> Line<'static> {
    let mut spans = vec![
        Span::styled(
            " muster ui ",
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(format!(" {} ", app.place)),
    ];
    match &app.link {
        Link::Connecting => spans.push(Span::raw("connecting ")),
        Link::Up { pid } => {
            let who = pid.map(|p| format!(" pid {p}")).unwrap_or_default();
            spans.push(Span::raw(format!("· {}{who} ", app.lifecycle)));
            if app.reconnects > 0 {
                spans.push(Span::raw("(reconnected) "));
            }
        }
        Link::Lost { .. } => spans.push(Span::styled(
            "· disconnected ",
            paint(app, Color::Red).add_modifier(Modifier::BOLD),
        )),
    }
    spans.push(Span::raw(format!("· {} services: ", app.services.len())));
    for (state, count) in app.counts() {
        let phase = Phase::ALL.into_iter().find(|p| p.as_str() == state);
        let style = phase.map_or(Style::default(), |p| state_style(app, p));
        spans.push(Span::styled(format!("{count} {state} "), style));
    }
    if app.read_only.is_some() {
        spans.push(Span::styled(
            " READ-ONLY ",
            paint(app, Color::Yellow).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    Line::from(spans)
}

fn footer_line(app: &App) -> Line<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    if app.filtering {
        return Line::from(vec![
            Span::styled("filter: ", bold),
            Span::raw(format!("{}█", app.filter)),
            Span::raw("  (Enter keeps it, Esc clears it)"),
        ]);
    }
    if app.log.searching {
        return Line::from(vec![
            Span::styled("search log: ", bold),
            Span::raw(format!("{}█", app.log.search)),
            Span::raw("  (Enter, then n/N for the next/previous match)"),
        ]);
    }
    let hints: &[(&str, &str)] = if app.read_only.is_some() {
        &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "select"),
            ("Tab", "pane"),
            ("/", "filter"),
            ("s", "sort"),
            ("Enter", "detail"),
            ("t", "tree"),
        ]
    } else {
        &[
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "select"),
            ("Tab", "pane"),
            ("/", "filter"),
            ("s", "sort"),
            ("Enter", "detail"),
            ("t", "tree"),
            ("r", "restart"),
            ("x", "stop"),
            ("u", "start"),
        ]
    };
    let mut spans = Vec::new();
    if app.read_only.is_some() {
        spans.push(Span::styled("read-only, actions disabled  ", bold));
    }
    for (key, what) in hints {
        spans.push(Span::styled((*key).to_owned(), bold));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    Line::from(spans)
}

/// A colour, or nothing with `NO_COLOR`.
fn paint(app: &App, colour: Color) -> Style {
    if app.colour {
        Style::default().fg(colour)
    } else {
        Style::default()
    }
}

/// How a state is shown: its colour, and without colour, bold for trouble.
fn state_style(app: &App, phase: Phase) -> Style {
    let colour = match phase {
        Phase::Healthy => Color::Green,
        Phase::Completed => Color::Blue,
        Phase::Starting | Phase::Pending | Phase::Stopping => Color::Yellow,
        Phase::Unhealthy | Phase::Exited => Color::Magenta,
        Phase::Failed => Color::Red,
        Phase::Stopped => Color::DarkGray,
    };
    let style = paint(app, colour);
    if matches!(phase, Phase::Failed | Phase::Unhealthy) {
        style.add_modifier(Modifier::BOLD)
    } else {
        style
    }
}

/// A pane's frame, its title bold when it has the keys.
fn pane<'a>(app: &App, title: String, focus: Option<Focus>) -> Block<'a> {
    let focused = focus.is_some_and(|f| f == app.focus);
    let style = if focused {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    let border = if focused {
        paint(app, Color::Cyan)
    } else {
        Style::default()
    };
    Block::bordered()
        .title(Span::styled(title, style))
        .border_style(border)
}
