//! Message elements as the webhooks show them (`{"type": "text", "text": "..."}`), and back
//! from a before-send callback that rewrites a message. Binary fields are base64.

use base64::Engine as _;
use meridian_domain::element::{Element, Forwarded};
use serde_json::{json, Value};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// One element as JSON.
pub fn to_json(element: &Element) -> Value {
    match element {
        Element::Text { text } => json!({"type": "text", "text": text}),
        Element::Image { url, format, size_bytes, width, height, thumbnail_url } => json!({
            "type": "image", "url": url, "format": format, "size_bytes": size_bytes,
            "width": width, "height": height, "thumbnail_url": thumbnail_url,
        }),
        Element::Voice { url, size_bytes, duration_seconds } => {
            json!({"type": "voice", "url": url, "size_bytes": size_bytes, "duration_seconds": duration_seconds})
        }
        Element::Video { url, format, size_bytes, duration_seconds, thumbnail_url } => json!({
            "type": "video", "url": url, "format": format, "size_bytes": size_bytes,
            "duration_seconds": duration_seconds, "thumbnail_url": thumbnail_url,
        }),
        Element::File { url, name, size_bytes } => {
            json!({"type": "file", "url": url, "name": name, "size_bytes": size_bytes})
        }
        Element::Face { index, data } => json!({"type": "face", "index": index, "data": b64(data)}),
        Element::Location { description, latitude, longitude } => {
            json!({"type": "location", "description": description, "latitude": latitude, "longitude": longitude})
        }
        Element::Custom { data, description, extension } => {
            json!({"type": "custom", "data": b64(data), "description": description, "extension": extension})
        }
        Element::MergedForward { title, abstracts, messages } => json!({
            "type": "merged_forward", "title": title, "abstracts": abstracts,
            "messages": messages.iter().map(forwarded_to_json).collect::<Vec<_>>(),
        }),
        Element::GroupTip { tip, users, by, fields } => json!({
            "type": "group_tip", "tip": tip.name(), "users": users, "by": by,
            "fields": fields.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        }),
    }
}

fn forwarded_to_json(f: &Forwarded) -> Value {
    json!({"sender": f.sender, "time_ms": f.time_ms, "elements": f.elements.iter().map(to_json).collect::<Vec<_>>()})
}

/// A message body as JSON.
pub fn body_to_json(elements: &[Element]) -> Value {
    Value::Array(elements.iter().map(to_json).collect())
}

/// A short preview of a message for a push: the start of its first text, else its kind.
pub fn preview(elements: &[Element]) -> String {
    const MAX_CHARS: usize = 100;
    let Some(first) = elements.first() else { return String::new() };
    match elements.iter().find_map(|e| match e {
        Element::Text { text } => Some(text),
        _ => None,
    }) {
        Some(text) if text.chars().count() > MAX_CHARS => {
            format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
        }
        Some(text) => text.clone(),
        None => {
            format!("[{}]", kind_name(first).replace('_', " "))
        }
    }
}

/// An element's `type` as the JSON shows it.
fn kind_name(element: &Element) -> &'static str {
    match element {
        Element::Text { .. } => "text",
        Element::Image { .. } => "image",
        Element::Voice { .. } => "voice",
        Element::Video { .. } => "video",
        Element::File { .. } => "file",
        Element::Face { .. } => "face",
        Element::Location { .. } => "location",
        Element::Custom { .. } => "custom",
        Element::MergedForward { .. } => "merged_forward",
        Element::GroupTip { .. } => "group_tip",
    }
}

/// A rewritten body from a before-send callback: the element kinds a client may send.
pub fn body_from_json(value: &Value) -> Result<Vec<Element>, String> {
    let items = value.as_array().ok_or("`elements` is not an array")?;
    items.iter().enumerate().map(|(i, e)| from_json(e).map_err(|why| format!("element {i}: {why}"))).collect()
}

fn from_json(v: &Value) -> Result<Element, String> {
    let s = |key: &str| -> Result<String, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{key}` is not a string")),
        }
    };
    let n = |key: &str| -> Result<u64, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(x) => x.as_u64().ok_or_else(|| format!("`{key}` is not a whole number")),
        }
    };
    let n32 =
        |key: &str| -> Result<u32, String> { u32::try_from(n(key)?).map_err(|_| format!("`{key}` is too large")) };
    let f = |key: &str| -> Result<f64, String> {
        v.get(key).and_then(Value::as_f64).ok_or_else(|| format!("`{key}` is not a number"))
    };
    let bytes = |key: &str| -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD.decode(s(key)?).map_err(|_| format!("`{key}` is not base64"))
    };
    Ok(match v.get("type").and_then(Value::as_str).ok_or("no `type`")? {
        "text" => Element::Text { text: s("text")? },
        "image" => Element::Image {
            url: s("url")?,
            format: s("format")?,
            size_bytes: n("size_bytes")?,
            width: n32("width")?,
            height: n32("height")?,
            thumbnail_url: s("thumbnail_url")?,
        },
        "voice" => {
            Element::Voice { url: s("url")?, size_bytes: n("size_bytes")?, duration_seconds: n32("duration_seconds")? }
        }
        "video" => Element::Video {
            url: s("url")?,
            format: s("format")?,
            size_bytes: n("size_bytes")?,
            duration_seconds: n32("duration_seconds")?,
            thumbnail_url: s("thumbnail_url")?,
        },
        "file" => Element::File { url: s("url")?, name: s("name")?, size_bytes: n("size_bytes")? },
        "face" => Element::Face { index: n32("index")?, data: bytes("data")? },
        "location" => {
            Element::Location { description: s("description")?, latitude: f("latitude")?, longitude: f("longitude")? }
        }
        "custom" => {
            Element::Custom { data: bytes("data")?, description: s("description")?, extension: s("extension")? }
        }
        other => return Err(format!("{other:?} is not an element a rewrite may carry")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_elements_survive_the_round_trip() {
        let body = vec![
            Element::Text { text: "hi".into() },
            Element::Custom { data: vec![0, 255, 7], description: "d".into(), extension: "e".into() },
            Element::Location { description: "x".into(), latitude: 1.5, longitude: -2.25 },
            Element::Face { index: 3, data: vec![1] },
            Element::File { url: "u".into(), name: "n".into(), size_bytes: 9 },
        ];
        assert_eq!(body_from_json(&body_to_json(&body)).expect("decodes"), body);
    }

    #[test]
    fn a_bad_rewrite_names_the_element_and_field() {
        let e = body_from_json(&json!([{"type": "text", "text": "ok"}, {"type": "face", "index": -1}]))
            .expect_err("a negative index is refused");
        assert!(e.contains("element 1") && e.contains("index"), "{e}");
        assert!(body_from_json(&json!({"type": "text"})).is_err());
        assert!(body_from_json(&json!([{"type": "group_tip"}])).is_err());
    }

    #[test]
    fn previews_show_the_text_or_the_kind() {
        assert_eq!(preview(&[Element::Text { text: "hello".into() }]), "hello");
        let long = "é".repeat(150);
        assert_eq!(preview(&[Element::Text { text: long }]).chars().count(), 101);
        assert_eq!(preview(&[Element::File { url: "u".into(), name: "n".into(), size_bytes: 1 }]), "[file]");
        assert_eq!(preview(&[]), "");
    }
}
