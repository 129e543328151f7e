//! The services table: one row per service that passes the filter, in the chosen
//! order (at first as the supervisor lists them); only the rows that fit are built, so a thousand services scroll as fast as
//! ten.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};

use super::super::app::{App, Focus};
use super::super::columns::Column;
use super::super::text::{bytes, duration, escaped, fit};
use super::{pane, state_style};

pub fn draw(frame: &mut Frame<'_>, app: &mut App, area: Rect) {
    let inner_height = area.height.saturating_sub(3) as usize;
    app.page = inner_height.max(1);
    let cursor = app.cursor().unwrap_or(0);
    // Keep the selection in view.
    if cursor < app.offset {
        app.offset = cursor;
    } else if inner_height > 0 && cursor >= app.offset + inner_height {
        app.offset = cursor + 1 - inner_height;
    }
    app.offset = app.offset.min(app.rows.len().saturating_sub(1));
    let name_width = app
        .rows
        .iter()
        .skip(app.offset)
        .take(inner_height)
        .map(|&i| app.services[i].name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 28);
    let widths = [
        Constraint::Length(name_width as u16),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Min(10),
    ];
    let reason_width = area.width.saturating_sub(name_width as u16 + 48 + 2 + 8) as usize;
    let header = Row::new(
        [
            Column::Name,
            Column::State,
            Column::Pid,
            Column::Uptime,
            Column::Restarts,
            Column::Cpu,
            Column::Memory,
            Column::Reason,
        ]
        .map(|column| {
            let mut title = column.title().to_owned();
            if column == app.sort {
                title.push(if app.descending { '▼' } else { '▲' });
            }
            Cell::from(title)
        }),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<Row<'_>> = app
        .rows
        .iter()
        .enumerate()
        .skip(app.offset)
        .take(inner_height)
        .map(|(at, &i)| {
            let s = &app.services[i];
            let mut reason = escaped(&s.reason);
            if let Some(status) = &s.notify_status {
                reason = format!("{reason} · {}", escaped(status));
            }
            let resources = s.resources.as_ref();
            let row = Row::new(vec![
                Cell::from(escaped(&s.name)),
                Cell::from(Span::styled(s.state.as_str(), state_style(app, s.state))),
                Cell::from(s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())),
                Cell::from(s.uptime_seconds.map(duration).unwrap_or_else(|| "-".into())),
                Cell::from(s.restarts.to_string()),
                Cell::from(resources.map_or("-".into(), |r| format!("{:.1}%", r.cpu_percent))),
                Cell::from(resources.map_or("-".into(), |r| bytes(r.memory_rss_bytes))),
                Cell::from(fit(&reason, reason_width.max(10))),
            ]);
            if at == cursor {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let mut title = format!(" services {}/{} ", app.rows.len(), app.services.len());
    if app.sort == Column::Order {
        title.push_str("· as listed ");
    }
    if !app.filter.is_empty() {
        title.push_str(&format!("· filter `{}` ", escaped(&app.filter)));
    }
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(pane(app, title, Some(Focus::Table)));
    frame.render_widget(table, area);
}
