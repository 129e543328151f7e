//! Who a service runs as: a user and a group named in the config (by name or number),
//! looked up in the system's account database (`/etc/passwd`, `/etc/group`, or whatever
//! NSS serves). A leaf: `check` uses it to say that a user or group does not exist, and
//! the supervisor looks the names up again at each start, since accounts change while a
//! supervisor runs.

use nix::unistd::{Gid, Group, Uid, User};

/// The account a process is switched to, everything resolved to numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name, for `USER` and `LOGNAME` (its number when it has no entry).
    pub name: String,
    pub uid: u32,
    /// The primary group: `group`, or the user's own.
    pub gid: u32,
    /// Every group the process holds: the primary one, then the user's supplementary
    /// groups (from the group database), without repeats.
    pub groups: Vec<u32>,
    /// The user's home directory, for `HOME`, when it has an entry.
    pub home: Option<String>,
}

impl Identity {
    /// The first directory on the way to `path` (from `/` down) that this account may
    /// not pass through (no search permission for it), if any.
    pub fn closed_dir_before(&self, path: &std::path::Path) -> Option<std::path::PathBuf> {
        use std::os::unix::fs::MetadataExt;
        if self.uid == 0 {
            return None;
        }
        let mut dirs: Vec<&std::path::Path> = path.ancestors().skip(1).collect();
        dirs.reverse();
        dirs.into_iter().find_map(|dir| {
            let meta = std::fs::metadata(dir).ok()?;
            let mode = meta.mode();
            let open = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if self.groups.contains(&meta.gid()) {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            (!open).then(|| dir.to_path_buf())
        })
    }
}

/// Why an account cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("user `{0}` does not exist")]
    NoUser(String),
    #[error("group `{0}` does not exist")]
    NoGroup(String),
    #[error("user {0} has no entry in the user database, so it has no group of its own")]
    NoPrimaryGroup(String),
    #[error("user `{user}` is not in group `{group}`")]
    NotInGroup {
        user: String,
        group: String,
        /// The groups it is in, by name, for the fix.
        member_of: Vec<String>,
    },
    #[error("cannot read the account database: {0}")]
    Lookup(String),
}

impl AccountError {
    /// How to fix it, in one line.
    pub fn help(&self) -> String {
        match self {
            AccountError::NoUser(name) => format!(
                "create it (`useradd --system {name}`), or name an existing user (`getent passwd` lists them)"
            ),
            AccountError::NoGroup(name) => format!(
                "create it (`groupadd --system {name}`), or name an existing group (`getent group` lists them)"
            ),
            AccountError::NoPrimaryGroup(_) => "set `group` too, by name or number".to_owned(),
            AccountError::NotInGroup {
                user,
                group,
                member_of,
            } => format!(
                "add the user to it (`usermod -aG {group} {user}`), or use one of its groups: {}",
                member_of.join(", ")
            ),
            AccountError::Lookup(_) => {
                "check /etc/nsswitch.conf and the services it names".to_owned()
            }
        }
    }
}

/// Looks up `user` and `group` (each a name or a number, either may be absent).
///
/// With a user: its uid, the primary group from `group` or else the user's own, and its
/// supplementary groups. A `group` must be one the user is in (its own, or one that
/// lists it), since running a user's program under a group it does not belong to is
/// more likely a mistake than a wish. With a group only: muster's own user under that
/// group alone.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Identity, AccountError> {
    let Some(user) = user else {
        let uid = Uid::current();
        let gid = match group {
            Some(group) => find_group(group)?.0,
            None => Gid::current().as_raw(),
        };
        let found = User::from_uid(uid).map_err(lookup)?;
        return Ok(Identity {
            name: found
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            uid: uid.as_raw(),
            gid,
            groups: vec![gid],
            home: found.map(|u| u.dir.display().to_string()),
        });
    };
    let entry = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup)?,
        Err(_) => Some(
            User::from_name(user)
                .map_err(lookup)?
                .ok_or_else(|| AccountError::NoUser(user.to_owned()))?,
        ),
    };
    let wanted_group = group.map(find_group).transpose()?;
    let Some(entry) = entry else {
        // A bare uid with no entry (common in containers): it has no groups to list.
        let uid: u32 = user.parse().unwrap_or_default();
        let (gid, _) = wanted_group.ok_or_else(|| AccountError::NoPrimaryGroup(user.to_owned()))?;
        return Ok(Identity {
            name: uid.to_string(),
            uid,
            gid,
            groups: vec![gid],
            home: None,
        });
    };
    let own = entry.gid.as_raw();
    let member_of = groups_of(&entry.name, own)?;
    let gid = match wanted_group {
        None => own,
        Some((gid, _)) if member_of.contains(&gid) => gid,
        Some((_, name)) => {
            return Err(AccountError::NotInGroup {
                user: entry.name.clone(),
                group: name,
                member_of: member_of.iter().map(|&gid| group_name(gid)).collect(),
            });
        }
    };
    let mut groups = vec![gid];
    groups.extend(member_of.into_iter().filter(|&g| g != gid));
    Ok(Identity {
        name: entry.name,
        uid: entry.uid.as_raw(),
        gid,
        groups,
        home: Some(entry.dir.display().to_string()),
    })
}

/// A group by name or number: its gid and its name as shown (the number itself when it
/// has no entry: a gid needs none to be used).
fn find_group(text: &str) -> Result<(u32, String), AccountError> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok((gid, group_name(gid)));
    }
    match Group::from_name(text).map_err(lookup)? {
        Some(group) => Ok((group.gid.as_raw(), group.name)),
        None => Err(AccountError::NoGroup(text.to_owned())),
    }
}

/// A gid's name, or the number when it has none.
fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map_or_else(|| gid.to_string(), |group| group.name)
}

/// The user's groups: `own` first, then every group that lists it.
fn groups_of(user: &str, own: u32) -> Result<Vec<u32>, AccountError> {
    let name = std::ffi::CString::new(user).map_err(|_| AccountError::NoUser(user.to_owned()))?;
    let mut groups = vec![own];
    let listed = nix::unistd::getgrouplist(&name, Gid::from_raw(own)).map_err(lookup)?;
    for gid in listed.into_iter().map(Gid::as_raw) {
        if !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    Ok(groups)
}

fn lookup(errno: nix::errno::Errno) -> AccountError {
    AccountError::Lookup(errno.desc().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_number() {
        let by_name = resolve(Some("root"), None).unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(by_name.groups[0], 0);
        assert_eq!(by_name.name, "root");
        let by_number = resolve(Some("0"), None).unwrap();
        assert_eq!(by_number, by_name);
    }

    #[test]
    fn a_directory_closed_to_the_user_is_found() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        for path in [dir.path(), &dir.path().join("a"), &inner] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let someone = Identity {
            name: "someone".into(),
            uid: 4_000_000,
            gid: 4_000_000,
            groups: vec![4_000_000],
            home: None,
        };
        let file = inner.join("file");
        // The temp dir's parents are open on any usual system.
        assert_eq!(someone.closed_dir_before(&file), None);
        std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        assert_eq!(someone.closed_dir_before(&file), Some(dir.path().join("a")));
    }

    #[test]
    fn a_missing_user_or_group_is_named() {
        assert_eq!(
            resolve(Some("no-such-user-here"), None),
            Err(AccountError::NoUser("no-such-user-here".into()))
        );
        assert_eq!(
            resolve(Some("root"), Some("no-such-group-here")),
            Err(AccountError::NoGroup("no-such-group-here".into()))
        );
    }

    #[test]
    fn a_uid_without_an_entry_needs_a_group() {
        assert_eq!(
            resolve(Some("4000000"), None),
            Err(AccountError::NoPrimaryGroup("4000000".into()))
        );
        let identity = resolve(Some("4000000"), Some("4000001")).unwrap();
        assert_eq!((identity.uid, identity.gid), (4_000_000, 4_000_001));
        assert_eq!(identity.groups, vec![4_000_001]);
    }

    #[test]
    fn a_group_the_user_is_not_in_is_refused_with_its_groups() {
        // `nobody` is in no group but its own on any common system; root's group 0 is
        // not it.
        let Ok(Some(nobody)) = User::from_name("nobody") else {
            return;
        };
        if nobody.gid.as_raw() == 0 {
            return;
        }
        match resolve(Some("nobody"), Some("0")) {
            Err(AccountError::NotInGroup { member_of, .. }) => {
                assert!(!member_of.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
