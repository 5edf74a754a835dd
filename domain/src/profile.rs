//! Profiles (REL-02): a user's profile fields, each validated at the boundary, set by partial
//! updates and read whole or field by field.
//!
//! Standard fields: `nickname` (at most 64 bytes), `avatar` (a URL, 500), `gender` (`unknown`,
//! `male`, `female`), `birthday` (`YYYYMMDD`), `location` (32), `signature` (500), `language`
//! (16), `add_friend` (`allow_any`, `need_confirm`, `deny_any`), `c2c_from` (`anyone`, or
//! `friends`: one-to-one messages from friends only, REL-05). Custom fields are
//! `custom.KEY` (key 1..=16 bytes of letters, digits, `_`, `-`; value at most 512 bytes), at
//! most 20 per user. An empty value removes a field.

use std::collections::BTreeMap;

use crate::rejection::{Reason, Rejection};

/// Most custom fields one profile holds.
pub const MAX_CUSTOM_FIELDS: usize = 20;
/// Most fields one update may set.
pub const MAX_FIELDS_PER_UPDATE: usize = 32;

/// A profile: field name → value, in name order.
pub type Profile = BTreeMap<String, String>;

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::ProfileFieldInvalid, message)
}

/// Checks one field of an update (an empty value removes the field).
pub fn check_field(name: &str, value: &str) -> Result<(), Rejection> {
    let max = |limit: usize| {
        if value.len() > limit {
            Err(bad(format!("{name} is at most {limit} bytes, got {}", value.len())))
        } else {
            Ok(())
        }
    };
    let one_of = |allowed: &[&str]| {
        if value.is_empty() || allowed.contains(&value) {
            Ok(())
        } else {
            Err(bad(format!("{name} is one of {allowed:?}, not {value:?}")))
        }
    };
    match name {
        "nickname" => max(64),
        "avatar" => max(500),
        "gender" => one_of(&["unknown", "male", "female"]),
        "birthday" => {
            if value.is_empty() || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit())) {
                Ok(())
            } else {
                Err(bad(format!("birthday is YYYYMMDD, not {value:?}")))
            }
        }
        "location" => max(32),
        "signature" => max(500),
        "language" => max(16),
        "add_friend" => one_of(&["allow_any", "need_confirm", "deny_any"]),
        "c2c_from" => one_of(&["anyone", "friends"]),
        custom => match custom_key(custom) {
            Some(_) => max(512),
            None => Err(bad(format!(
                "{custom:?} is not a profile field: nickname, avatar, gender, birthday, location, signature, \
                 language, add_friend, c2c_from or custom.KEY"
            ))),
        },
    }
}

/// The key of a custom field name `custom.KEY` (KEY 1..=16 bytes of letters, digits, `_`,
/// `-`), if it is one: the rule of profiles, group profiles and member fields alike.
pub fn custom_key(name: &str) -> Option<&str> {
    name.strip_prefix("custom.").filter(|key| {
        (1..=16).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// `fields` applied to `map` (an empty value removes a field), and how many `custom.` fields
/// the result holds.
pub fn with_fields(mut map: Profile, fields: &[(String, String)]) -> (Profile, usize) {
    for (name, value) in fields {
        if value.is_empty() {
            map.remove(name);
        } else {
            map.insert(name.clone(), value.clone());
        }
    }
    let custom = map.keys().filter(|k| k.starts_with("custom.")).count();
    (map, custom)
}

/// Checks a whole update.
pub fn check_update(fields: &[(String, String)]) -> Result<(), Rejection> {
    if fields.is_empty() || fields.len() > MAX_FIELDS_PER_UPDATE {
        return Err(bad(format!("an update sets 1..={MAX_FIELDS_PER_UPDATE} fields, got {}", fields.len())));
    }
    fields.iter().try_for_each(|(name, value)| check_field(name, value))
}

/// `profile` with `fields` applied; a rejection when it would hold too many custom fields.
pub fn updated(profile: Profile, fields: &[(String, String)]) -> Result<Profile, Rejection> {
    let (profile, custom) = with_fields(profile, fields);
    if custom > MAX_CUSTOM_FIELDS {
        return Err(bad(format!("a profile holds at most {MAX_CUSTOM_FIELDS} custom fields, this would be {custom}")));
    }
    Ok(profile)
}
