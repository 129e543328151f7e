//! What each key does. Overlays and text inputs take the keys first; then the keys that
//! work everywhere (`q`, `?`, views, actions); then those of the focused pane. An
//! action key gives back the [`Action`] to carry out, or opens its confirmation or its
//! prompt; with a read-only token it only says why nothing happens.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::actions::Action;
use super::app::{App, Focus, Overlay, PromptFor, View};

/// Handles one key; gives back an action to carry out now.
pub fn key(app: &mut App, key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return None;
    }
    if let Some(overlay) = app.overlay.take() {
        return overlay_key(app, overlay, key);
    }
    if app.filtering {
        edit(&mut app.filter, &mut app.filtering, key);
        app.refresh_rows();
        return None;
    }
    if app.log.searching {
        edit(&mut app.log.search, &mut app.log.searching, key);
        return None;
    }
    match key.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('?') => app.overlay = Some(Overlay::Help),
        KeyCode::Tab => {
            app.focus = match app.focus {
                Focus::Table => Focus::Log,
                Focus::Log => Focus::Feed,
                Focus::Feed => Focus::Table,
            }
        }
        KeyCode::BackTab => {
            app.focus = match app.focus {
                Focus::Table => Focus::Feed,
                Focus::Log => Focus::Table,
                Focus::Feed => Focus::Log,
            }
        }
        KeyCode::Enter | KeyCode::Char('d') if app.focus == Focus::Table => {
            app.view = if app.view == View::Detail {
                View::Table
            } else {
                View::Detail
            };
        }
        KeyCode::Char('t') => {
            app.view = if app.view == View::Tree {
                View::Table
            } else {
                View::Tree
            };
        }
        KeyCode::Esc => {
            if app.view != View::Table {
                app.view = View::Table;
            } else if !app.filter.is_empty() {
                app.filter.clear();
                app.refresh_rows();
            } else {
                app.log.search.clear();
            }
        }
        KeyCode::Char('/') if app.focus == Focus::Log => {
            app.log.searching = true;
            app.log.search.clear();
        }
        KeyCode::Char('/') => {
            app.focus = Focus::Table;
            app.filtering = true;
        }
        KeyCode::Char('s') => {
            app.sort = app.sort.next();
            app.refresh_rows();
        }
        KeyCode::Char('S') => {
            app.descending = !app.descending;
            app.refresh_rows();
        }
        KeyCode::Char('p') => app.toggle_pause(),
        KeyCode::Char('w') => app.log.wrap = !app.log.wrap,
        KeyCode::Char('n') => search_step(app, true),
        KeyCode::Char('N') => search_step(app, false),
        KeyCode::Char('R') => return act(app, Action::ReloadConfig),
        KeyCode::Char(c @ ('u' | 'x' | 'r' | 'e' | 'K' | '=')) => {
            let name = app.selected.clone()?;
            return match c {
                'u' => act(app, Action::Start(name)),
                'x' => act(app, Action::Stop(name)),
                'r' => act(app, Action::Restart(name)),
                'e' => act(app, Action::Ensure(name)),
                'K' => prompt(app, PromptFor::Signal, "TERM"),
                _ => prompt(app, PromptFor::Scale, ""),
            };
        }
        code => scroll(app, code),
    }
    None
}

/// Moves in the focused pane.
fn scroll(app: &mut App, code: KeyCode) {
    let page = app.page.max(1) as isize;
    let delta: isize = match code {
        KeyCode::Up | KeyCode::Char('k') => -1,
        KeyCode::Down | KeyCode::Char('j') => 1,
        KeyCode::PageUp => -page,
        KeyCode::PageDown => page,
        KeyCode::Home | KeyCode::Char('g') => isize::MIN / 2,
        KeyCode::End | KeyCode::Char('G') => isize::MAX / 2,
        _ => return,
    };
    match app.focus {
        Focus::Table => app.move_by(delta),
        // Lines up from the end: up the pane is more.
        Focus::Log => {
            let most = app.log.lines.len().saturating_sub(1);
            app.log.scroll = offset(app.log.scroll, -delta, most);
        }
        Focus::Feed => {
            let most = app.feed.len().saturating_sub(1);
            app.feed_scroll = offset(app.feed_scroll, -delta, most);
        }
    }
}

fn offset(at: usize, delta: isize, most: usize) -> usize {
    (at as isize).saturating_add(delta).clamp(0, most as isize) as usize
}

/// Jumps the log to the next (older, `back`) or newer match of the search.
fn search_step(app: &mut App, back: bool) {
    let needle = app.log.search.to_lowercase();
    if needle.is_empty() {
        return;
    }
    let lines = &app.log.lines;
    let len = lines.len();
    // Index from the end: scroll 0 is the newest line.
    let hit = |scroll: usize| {
        len.checked_sub(scroll + 1)
            .and_then(|i| lines.get(i))
            .is_some_and(|line| line.text.to_lowercase().contains(&needle))
    };
    let from = app.log.scroll;
    let found = if back {
        (from + 1..len).find(|&s| hit(s))
    } else {
        (0..from).rev().find(|&s| hit(s))
    };
    match found {
        Some(scroll) => app.log.scroll = scroll,
        None => app.note(format!("no more lines matching `{}`", app.log.search)),
    }
}

/// An action: refused with a read token, confirmed first when it stops something.
fn act(app: &mut App, action: Action) -> Option<Action> {
    if let Some(why) = &app.read_only {
        let why = why.clone();
        app.note(format!("{} refused: {why}", action.describe()));
        return None;
    }
    if action.needs_confirmation() {
        app.overlay = Some(Overlay::Confirm(action));
        return None;
    }
    app.note(format!("{}...", action.describe()));
    Some(action)
}

fn prompt(app: &mut App, action: PromptFor, default: &str) -> Option<Action> {
    if let Some(why) = &app.read_only {
        let why = why.clone();
        app.note(format!("actions refused: {why}"));
        return None;
    }
    app.overlay = Some(Overlay::Prompt {
        action,
        input: default.to_owned(),
    });
    None
}

fn overlay_key(app: &mut App, overlay: Overlay, key: KeyEvent) -> Option<Action> {
    match overlay {
        Overlay::Help | Overlay::Report { .. } => {
            if key.code == KeyCode::Char('q') && matches!(overlay, Overlay::Help) {
                app.quit = true;
            }
            None
        }
        Overlay::Confirm(action) => {
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                app.note(format!("{}...", action.describe()));
                Some(action)
            } else {
                app.note(format!("{}: cancelled", action.describe()));
                None
            }
        }
        Overlay::Prompt { action, mut input } => {
            let name = app.selected.clone()?;
            match key.code {
                KeyCode::Esc => None,
                KeyCode::Enter => {
                    let chosen = match action {
                        PromptFor::Signal => Action::Signal(name, input.trim().to_owned()),
                        // An instance scales its service (`web.2` → `web`).
                        PromptFor::Scale => match input.trim().parse::<u32>() {
                            Ok(replicas) => {
                                let set = app
                                    .selected_service()
                                    .and_then(|s| s.replica.as_ref())
                                    .map_or(name, |r| r.of.clone());
                                Action::Scale(set, replicas)
                            }
                            Err(_) => {
                                app.note(format!(
                                    "scale {name}: `{}` is not a number of replicas; type 1 to 1000",
                                    input.trim()
                                ));
                                return None;
                            }
                        },
                    };
                    app.overlay = Some(Overlay::Confirm(chosen));
                    None
                }
                _ => {
                    let mut open = true;
                    edit(&mut input, &mut open, key);
                    app.overlay = Some(Overlay::Prompt { action, input });
                    None
                }
            }
        }
    }
}

/// A one-line text input: characters, backspace, Enter or Esc to finish.
fn edit(text: &mut String, open: &mut bool, key: KeyEvent) {
    match key.code {
        KeyCode::Enter => *open = false,
        KeyCode::Esc => {
            text.clear();
            *open = false;
        }
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) if !c.is_control() && text.chars().count() < 64 => text.push(c),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(app: &mut App, code: KeyCode) -> Option<Action> {
        key(app, KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn a_read_only_session_refuses_every_action_and_says_why() {
        let mut app = App::new("x".into(), false);
        app.selected = Some("web".into());
        app.read_only = Some("read-only: the read token may only read".into());
        for c in ['u', 'x', 'r', 'e', 'K', '=', 'R'] {
            assert_eq!(press(&mut app, KeyCode::Char(c)), None);
            assert_eq!(app.overlay, None);
        }
        assert!(app.feed.iter().all(|l| l.text.contains("refused")));
        assert_eq!(app.feed.len(), 7);
    }

    #[test]
    fn stop_is_confirmed_and_start_is_not() {
        let mut app = App::new("x".into(), false);
        app.selected = Some("web".into());
        assert_eq!(
            press(&mut app, KeyCode::Char('u')),
            Some(Action::Start("web".into()))
        );
        assert_eq!(press(&mut app, KeyCode::Char('x')), None);
        assert_eq!(
            app.overlay,
            Some(Overlay::Confirm(Action::Stop("web".into())))
        );
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.overlay, None);
        press(&mut app, KeyCode::Char('x'));
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Action::Stop("web".into()))
        );
    }

    #[test]
    fn scale_asks_for_a_number_then_confirms() {
        let mut app = App::new("x".into(), false);
        app.selected = Some("web".into());
        press(&mut app, KeyCode::Char('='));
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            app.overlay,
            Some(Overlay::Confirm(Action::Scale("web".into(), 3)))
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('y')),
            Some(Action::Scale("web".into(), 3))
        );
    }
}
