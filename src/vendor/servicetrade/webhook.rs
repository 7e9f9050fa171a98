//! Parsing a ServiceTrade webhook body. Pure. A body is accepted only when
//! it is the documented shape: `{messageId, timestamp, data:[{action,
//! entity{type, id}}]}` with a known action and entity type; anything else
//! is refused with a reason (→ 400 and a dead letter).

use serde_json::Value;

use super::TYPES;

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub action: String,
    pub kind: &'static str,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_id: String,
    pub notices: Vec<Notice>,
}

pub fn parse(body: &[u8]) -> Result<Message, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let message_id = match v.get("messageId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("messageId: expected a string, got {other}")),
        None => return Err("messageId is missing".into()),
    };
    let Some(Value::Array(data)) = v.get("data") else {
        return Err("data: expected an array".into());
    };
    let mut notices = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let action = match item.get("action").and_then(Value::as_str) {
            Some(a @ ("created" | "updated" | "deleted")) => a.to_string(),
            other => return Err(format!("data[{i}].action {other:?} is not created/updated/deleted")),
        };
        let entity = item.get("entity").ok_or_else(|| format!("data[{i}].entity is missing"))?;
        let kind = entity.get("type").and_then(Value::as_str).unwrap_or("");
        let Some(kind) = TYPES.iter().copied().find(|t| *t == kind) else {
            return Err(format!("data[{i}].entity.type {kind:?} is not one of {TYPES:?}"));
        };
        let id = match entity.get("id") {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('/') => s.clone(),
            other => return Err(format!("data[{i}].entity.id {other:?} is not an id")),
        };
        notices.push(Notice { action, kind, id });
    }
    Ok(Message { message_id, notices })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shape_only() {
        let ok = br#"{"messageId":"m1","timestamp":1,"data":[{"action":"updated","timestamp":1,"userId":null,"entity":{"type":"job","id":9,"uri":"/api/job/9"},"changeset":[]}]}"#;
        let m = parse(ok).unwrap();
        assert_eq!(m.notices, vec![Notice { action: "updated".into(), kind: "job", id: "9".into() }]);
        for bad in [
            &b"not json"[..],
            br#"{"data":[]}"#,
            br#"{"messageId":"m","data":{}}"#,
            br#"{"messageId":"m","data":[{"action":"moved","entity":{"type":"job","id":1}}]}"#,
            br#"{"messageId":"m","data":[{"action":"created","entity":{"type":"invoice","id":1}}]}"#,
            br#"{"messageId":"m","data":[{"action":"created","entity":{"type":"job","id":1.5}}]}"#,
            br#"{"messageId":["m"],"data":[]}"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
