//! Contact events (schema 2.0) and what they name.
//!
//! ```json
//! {"schema": "2.0",
//!  "header": {"event_id": "…", "event_type": "contact.user.created_v3", "create_time": "1716171245000",
//!             "token": "<verification token>", "app_id": "cli_…", "tenant_key": "…"},
//!  "event": {"object": {…}, "old_object": {…}}}
//! ```

use serde_json::Value;

use crate::config::UserIdType;
use crate::error::LarkError;
use crate::source::Target;

/// One decrypted callback body.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    /// `{"type": "url_verification", "challenge", "token"}`.
    UrlVerification {
        /// Echo this.
        challenge: String,
        /// Must be the Verification Token.
        token: String,
    },
    /// A schema 2.0 event.
    Event(EventEnvelope),
}

/// The parts of a schema 2.0 event the sync uses.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    /// `header.event_id` (de-duplication key).
    pub event_id: String,
    /// `header.event_type`.
    pub event_type: String,
    /// `header.token` (must be the Verification Token).
    pub token: String,
    /// `event`.
    pub event: Value,
}

fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Parses a decrypted (or plain) callback body.
pub fn parse_callback(body: &Value) -> idsync_core::Result<Callback> {
    if body.get("type").and_then(Value::as_str) == Some("url_verification") {
        return Ok(Callback::UrlVerification {
            challenge: s(body, "/challenge"),
            token: s(body, "/token"),
        });
    }
    if body.get("schema").and_then(Value::as_str) != Some("2.0") {
        return Err(LarkError::Callback(
            "not a schema 2.0 event (subscribe with the 2.0 event format)".into(),
        )
        .into());
    }
    let e = EventEnvelope {
        event_id: s(body, "/header/event_id"),
        event_type: s(body, "/header/event_type"),
        token: s(body, "/header/token"),
        event: body.get("event").cloned().unwrap_or(Value::Null),
    };
    if e.event_id.is_empty() || e.event_type.is_empty() {
        return Err(LarkError::Callback(
            "event without header.event_id or header.event_type".into(),
        )
        .into());
    }
    Ok(Callback::Event(e))
}

/// The entities an event names, with "gone": `contact.user.*_v3` by the anchor id type,
/// `contact.department.*_v3` by `open_department_id`, `contact.scope.updated_v3` as
/// [`Target::Scope`]. Other events name nothing.
pub fn targets(e: &EventEnvelope, id_type: UserIdType) -> Vec<(Target, bool)> {
    let ev = &e.event;
    let pick = |field: &str| {
        [
            ev.pointer(&format!("/object/{field}")),
            ev.pointer(&format!("/old_object/{field}")),
        ]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|v| !v.is_empty())
        .map(str::to_owned)
    };
    match e.event_type.as_str() {
        "contact.user.created_v3" | "contact.user.updated_v3" | "contact.user.deleted_v3" => {
            pick(id_type.as_str())
                .map(|id| vec![(Target::User(id), e.event_type == "contact.user.deleted_v3")])
                .unwrap_or_default()
        }
        "contact.department.created_v3"
        | "contact.department.updated_v3"
        | "contact.department.deleted_v3" => pick("open_department_id")
            .map(|id| {
                vec![(
                    Target::Dept(id),
                    e.event_type == "contact.department.deleted_v3",
                )]
            })
            .unwrap_or_default(),
        "contact.scope.updated_v3" => vec![(Target::Scope, false)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_and_targets() {
        let body = json!({"schema": "2.0",
            "header": {"event_id": "e1", "event_type": "contact.user.deleted_v3",
                       "create_time": "1716171245000", "token": "vt", "app_id": "cli_x"},
            "event": {"object": {"union_id": "on_1", "open_id": "ou_1"},
                      "old_object": {"department_ids": ["od-1"], "open_id": "ou_1"}}});
        let Callback::Event(e) = parse_callback(&body).unwrap() else {
            panic!("an event")
        };
        assert_eq!(e.token, "vt");
        assert_eq!(
            targets(&e, UserIdType::UnionId),
            vec![(Target::User("on_1".into()), true)]
        );
        let mut scope = e.clone();
        scope.event_type = "contact.scope.updated_v3".into();
        assert_eq!(
            targets(&scope, UserIdType::OpenId),
            vec![(Target::Scope, false)]
        );
        let mut dept = e;
        dept.event_type = "contact.department.updated_v3".into();
        dept.event = json!({"object": {"open_department_id": "od-9", "order": 100}});
        assert_eq!(
            targets(&dept, UserIdType::UnionId),
            vec![(Target::Dept("od-9".into()), false)]
        );
        let challenge = json!({"challenge": "c1", "token": "vt", "type": "url_verification"});
        assert_eq!(
            parse_callback(&challenge).unwrap(),
            Callback::UrlVerification {
                challenge: "c1".into(),
                token: "vt".into()
            }
        );
        assert!(parse_callback(&json!({"uuid": "x", "event": {}})).is_err());
    }
}
