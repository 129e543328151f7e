//! Service names: what a name may be, checked once where it is made. A leaf: config,
//! events, the store and the API all speak of services by these names.

use std::fmt;

use serde::Serialize;

/// The longest service name accepted; names become file names and URL segments.
pub const MAX_NAME_LEN: usize = 63;

/// The most instances one service may run (`replicas`, `muster scale`).
pub const MAX_REPLICAS: u32 = 1000;

/// A service name: 1 to 63 characters of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit, and for an instance of a service with `replicas`, `.` and its
/// number (`web.0`). Safe as a file name, a URL path segment and an environment value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

/// Why a string is not a valid [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a service name cannot be empty")]
    Empty,
    #[error("a service name is at most {MAX_NAME_LEN} characters, this one has {0}")]
    TooLong(usize),
    #[error("a service name must start with a lowercase letter or a digit")]
    BadStart,
    #[error("a service name may only hold `a-z`, `0-9`, `-` and `_`, not {0:?}")]
    BadChar(char),
    #[error("after `.` an instance's name has its number, below {MAX_REPLICAS}: `web.0`")]
    BadInstance,
}

impl ServiceName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if let Some((set, index)) = name.split_once('.')
            && Self::new(set).is_ok()
        {
            let number_ok = !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit())
                && (index == "0" || !index.starts_with('0'))
                && index.parse::<u32>().is_ok_and(|n| n < MAX_REPLICAS);
            if !number_ok {
                return Err(
                    if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
                        NameError::BadInstance
                    } else {
                        NameError::BadChar('.')
                    },
                );
            }
            return Ok(Self(name.to_owned()));
        }
        let first = name.chars().next().ok_or(NameError::Empty)?;
        let length = name.chars().count();
        if length > MAX_NAME_LEN {
            return Err(NameError::TooLong(length));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart);
        }
        if let Some(bad) = name
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
        {
            return Err(NameError::BadChar(bad));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of instance `index` of the set `self`.
    pub fn instance(&self, index: u32) -> ServiceName {
        Self(format!("{}.{index}", self.0))
    }

    /// For an instance (`web.2`), its set's name and its number.
    pub fn replica_of(&self) -> Option<(&str, u32)> {
        let (set, index) = self.0.split_once('.')?;
        Some((set, index.parse().ok()?))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that `{name:<10}` aligns columns.
        f.pad(&self.0)
    }
}

/// Read back (from the API) through [`ServiceName::new`], so a name that could not be
/// a service's is refused rather than trusted.
impl<'de> serde::Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::new(&name).map_err(|error| serde::de::Error::custom(format!("`{name}`: {error}")))
    }
}

impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}
