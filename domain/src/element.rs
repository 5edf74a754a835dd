//! The typed message elements of MSG-01. A message is one or more elements; media travel by
//! reference (a URL into an object store), never inline.

use crate::rejection::{Reason, Rejection};

/// Deepest nesting of merged-forward elements.
pub const MAX_FORWARD_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Text {
        text: String,
    },
    Image {
        url: String,
        format: String,
        size_bytes: u64,
        width: u32,
        height: u32,
        thumbnail_url: String,
    },
    Voice {
        url: String,
        size_bytes: u64,
        duration_seconds: u32,
    },
    Video {
        url: String,
        format: String,
        size_bytes: u64,
        duration_seconds: u32,
        thumbnail_url: String,
    },
    File {
        url: String,
        name: String,
        size_bytes: u64,
    },
    Face {
        index: u32,
        data: Vec<u8>,
    },
    Location {
        description: String,
        latitude: f64,
        longitude: f64,
    },
    Custom {
        data: Vec<u8>,
        description: String,
        extension: String,
    },
    MergedForward {
        title: String,
        abstracts: Vec<String>,
        messages: Vec<Forwarded>,
    },
    /// A system notification in a group's stream (a join, a leave, a kick, a profile change),
    /// written by the server, never sent by a client.
    GroupTip {
        tip: TipKind,
        users: Vec<String>,
        by: String,
        fields: Vec<(String, String)>,
    },
}

/// What a group notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipKind {
    Joined,
    Left,
    Kicked,
    ProfileChanged,
    OwnerChanged,
    Banned,
}

impl TipKind {
    pub const ALL: [TipKind; 6] = [
        TipKind::Joined,
        TipKind::Left,
        TipKind::Kicked,
        TipKind::ProfileChanged,
        TipKind::OwnerChanged,
        TipKind::Banned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TipKind::Joined => "joined",
            TipKind::Left => "left",
            TipKind::Kicked => "kicked",
            TipKind::ProfileChanged => "profile_changed",
            TipKind::OwnerChanged => "owner_changed",
            TipKind::Banned => "banned",
        }
    }

    pub fn from_name(name: &str) -> Option<TipKind> {
        TipKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One message inside a merged-forward element.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub sender: String,
    pub time_ms: i64,
    pub elements: Vec<Element>,
}

impl Element {
    /// Checks the element's own rules (not the message size, which [`validate_body`] checks).
    pub fn validate(&self) -> Result<(), Rejection> {
        self.validate_at(0)
    }

    fn validate_at(&self, depth: usize) -> Result<(), Rejection> {
        let invalid = |what: &str| Err(Rejection::new(Reason::ElementInvalid, what.to_owned()));
        match self {
            Element::Text { text } if text.is_empty() => invalid("a text element needs text"),
            Element::Image { url, .. } | Element::Voice { url, .. } | Element::Video { url, .. } if url.is_empty() => {
                invalid("a media element needs the url of the uploaded media")
            }
            Element::File { url, name, .. } if url.is_empty() || name.is_empty() => {
                invalid("a file element needs a url and a name")
            }
            Element::Location { latitude, longitude, .. }
                if !(-90.0..=90.0).contains(latitude) || !(-180.0..=180.0).contains(longitude) =>
            {
                invalid("a location needs latitude in [-90, 90] and longitude in [-180, 180]")
            }
            Element::Custom { data, description, extension }
                if data.is_empty() && description.is_empty() && extension.is_empty() =>
            {
                invalid("a custom element needs data, a description or an extension")
            }
            Element::GroupTip { .. } => invalid("group notifications are written by the server, not sent"),
            Element::MergedForward { messages, .. } => {
                if messages.is_empty() {
                    return invalid("a merged-forward element needs at least one message");
                }
                if depth >= MAX_FORWARD_DEPTH {
                    return invalid("merged-forward elements nest at most 4 deep");
                }
                for m in messages {
                    if m.elements.is_empty() {
                        return invalid("a forwarded message needs at least one element");
                    }
                    for e in &m.elements {
                        e.validate_at(depth + 1)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The text of a text element, for previews and the CLI.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Element::Text { text } => Some(text),
            _ => None,
        }
    }
}

/// Checks a message body: at least one element, each valid, and the encoded size (measured by
/// the caller on the durable encoding, the bytes that are actually stored) within the limit.
pub fn validate_body(elements: &[Element], encoded_bytes: usize, max_bytes: usize) -> Result<(), Rejection> {
    if elements.is_empty() {
        return Err(Rejection::new(Reason::MessageEmpty, "a message needs at least one element"));
    }
    for e in elements {
        e.validate()?;
    }
    if encoded_bytes > max_bytes {
        return Err(Rejection::new(
            Reason::MessageTooLarge,
            format!("the message is {encoded_bytes} bytes; the limit is {max_bytes}. Send media by reference"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Element {
        Element::Text { text: s.to_owned() }
    }

    #[test]
    fn body_rules() {
        assert!(validate_body(&[text("hi")], 10, 12 * 1024).is_ok());
        assert_eq!(validate_body(&[], 0, 100).map_err(|r| r.reason), Err(Reason::MessageEmpty));
        assert_eq!(validate_body(&[text("")], 2, 100).map_err(|r| r.reason), Err(Reason::ElementInvalid));
        assert_eq!(
            validate_body(&[text("x")], 12 * 1024 + 1, 12 * 1024).map_err(|r| r.reason),
            Err(Reason::MessageTooLarge)
        );
    }

    #[test]
    fn forward_depth_is_bounded() {
        let mut e = text("leaf");
        for _ in 0..=MAX_FORWARD_DEPTH {
            e = Element::MergedForward {
                title: "t".into(),
                abstracts: vec![],
                messages: vec![Forwarded { sender: "a".into(), time_ms: 0, elements: vec![e] }],
            };
        }
        assert_eq!(e.validate().map_err(|r| r.reason), Err(Reason::ElementInvalid));
    }

    #[test]
    fn location_bounds() {
        let bad = Element::Location { description: String::new(), latitude: 91.0, longitude: 0.0 };
        assert_eq!(bad.validate().map_err(|r| r.reason), Err(Reason::ElementInvalid));
    }
}
