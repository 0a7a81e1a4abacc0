//! The XML of WeCom callbacks: the encrypted POST envelope and the decrypted
//! `change_contact` events (doc 90970 members, 90971 departments).
//!
//! Only ids are used from an event: callbacks configured for the contact-sync assistant
//! after 2022-08-15 carry `UserID` / `Department`-type fields only, so the source always
//! re-reads the entity (`user/get`, `department/get`).

use idsync_core::Result;
use serde::Deserialize;

use crate::error::WeComError;

fn xml_err(what: &str, e: impl std::fmt::Display) -> idsync_core::Error {
    WeComError::Crypto(format!("{what}: {e}")).into()
}

/// The POST body of a callback: `<xml><ToUserName/><Encrypt/><AgentID/></xml>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// The CorpID (absent in some suite callbacks).
    #[serde(rename = "ToUserName", default)]
    pub to_user_name: Option<String>,
    /// The base64 ciphertext.
    #[serde(rename = "Encrypt")]
    pub encrypt: String,
    /// The app's AgentID (empty for the contact-sync assistant).
    #[serde(rename = "AgentID", default)]
    pub agent_id: Option<String>,
}

/// Parses the encrypted envelope of a POST callback.
pub fn parse_envelope(xml: &str) -> Result<Envelope> {
    let env: Envelope = quick_xml::de::from_str(xml)
        .map_err(|e| xml_err("callback body is not the XML envelope", e))?;
    if env.encrypt.trim().is_empty() {
        return Err(xml_err("callback body", "<Encrypt> is empty"));
    }
    Ok(env)
}

#[derive(Debug, Default, Deserialize)]
struct RawEvent {
    #[serde(rename = "ToUserName", default)]
    to_user_name: Option<String>,
    #[serde(rename = "AuthCorpId", default)]
    auth_corp_id: Option<String>,
    #[serde(rename = "CreateTime", default)]
    create_time: Option<String>,
    #[serde(rename = "TimeStamp", default)]
    timestamp: Option<String>,
    #[serde(rename = "MsgType", default)]
    msg_type: Option<String>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
    #[serde(rename = "InfoType", default)]
    info_type: Option<String>,
    #[serde(rename = "ChangeType", default)]
    change_type: Option<String>,
    #[serde(rename = "UserID", default)]
    user_id: Option<String>,
    #[serde(rename = "NewUserID", default)]
    new_user_id: Option<String>,
    #[serde(rename = "Id", default)]
    id: Option<String>,
}

/// What a `change_contact` event says changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactChange {
    /// `create_user`.
    UserCreated {
        /// `UserID`.
        userid: String,
    },
    /// `update_user`; `new_userid` is set when the userid itself changed (a rename of the
    /// anchor, never a delete and a create).
    UserUpdated {
        /// `UserID` (the old one on a rename).
        userid: String,
        /// `NewUserID`.
        new_userid: Option<String>,
    },
    /// `delete_user`.
    UserDeleted {
        /// `UserID`.
        userid: String,
    },
    /// `create_party`.
    DeptCreated {
        /// `Id`.
        id: i64,
    },
    /// `update_party`.
    DeptUpdated {
        /// `Id`.
        id: i64,
    },
    /// `delete_party`.
    DeptDeleted {
        /// `Id`.
        id: i64,
    },
}

/// A decrypted callback message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackMessage {
    /// A directory change.
    Contact {
        /// The corp (`ToUserName`, or `AuthCorpId` for suites).
        corp_id: String,
        /// `CreateTime` (`TimeStamp` for suites), unix seconds.
        create_time: i64,
        /// The change.
        change: ContactChange,
    },
    /// Anything else (`update_tag`, messages, other events): acknowledged and ignored.
    Other {
        /// `MsgType` / `InfoType`.
        kind: String,
        /// `Event` / `ChangeType`.
        detail: String,
    },
}

impl CallbackMessage {
    /// The key WeCom's retries are deduplicated on: corp, time, change type and ids.
    pub fn dedup_key(&self) -> Option<String> {
        match self {
            CallbackMessage::Contact {
                corp_id,
                create_time,
                change,
            } => Some(format!("{corp_id}|{create_time}|{change:?}")),
            CallbackMessage::Other { .. } => None,
        }
    }
}

fn required(v: Option<String>, what: &str, change: &str) -> Result<String> {
    match v.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => {
            Err(WeComError::Decode(format!("change_contact {change}: <{what}> is missing")).into())
        }
    }
}

fn dept_id(v: Option<String>, change: &str) -> Result<i64> {
    let raw = required(v, "Id", change)?;
    raw.parse().map_err(|_| {
        WeComError::Decode(format!(
            "change_contact {change}: <Id> {raw:?} is not a number"
        ))
        .into()
    })
}

/// Parses a decrypted callback message.
pub fn parse_message(xml: &str) -> Result<CallbackMessage> {
    let raw: RawEvent =
        quick_xml::de::from_str(xml).map_err(|e| xml_err("decrypted callback is not XML", e))?;
    let is_contact = raw.event.as_deref() == Some("change_contact")
        || raw.info_type.as_deref() == Some("change_contact");
    let change_type = raw.change_type.clone().unwrap_or_default();
    if !is_contact {
        return Ok(CallbackMessage::Other {
            kind: raw.msg_type.or(raw.info_type).unwrap_or_default(),
            detail: raw.event.unwrap_or(change_type),
        });
    }
    let ct = change_type.as_str();
    let change = match ct {
        "create_user" => ContactChange::UserCreated {
            userid: required(raw.user_id, "UserID", ct)?,
        },
        "update_user" => ContactChange::UserUpdated {
            userid: required(raw.user_id, "UserID", ct)?,
            new_userid: raw
                .new_user_id
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        },
        "delete_user" => ContactChange::UserDeleted {
            userid: required(raw.user_id, "UserID", ct)?,
        },
        "create_party" => ContactChange::DeptCreated {
            id: dept_id(raw.id, ct)?,
        },
        "update_party" => ContactChange::DeptUpdated {
            id: dept_id(raw.id, ct)?,
        },
        "delete_party" => ContactChange::DeptDeleted {
            id: dept_id(raw.id, ct)?,
        },
        _ => {
            return Ok(CallbackMessage::Other {
                kind: "change_contact".to_owned(),
                detail: change_type,
            });
        }
    };
    let corp_id = raw.to_user_name.or(raw.auth_corp_id).unwrap_or_default();
    let create_time = raw
        .create_time
        .or(raw.timestamp)
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Ok(CallbackMessage::Contact {
        corp_id,
        create_time,
        change,
    })
}

/// The XML of a `change_contact` event as WeCom sends it (ids only, as to the contact-sync
/// assistant). The fake uses it to push events.
pub fn contact_event_xml(corp_id: &str, create_time: i64, change: &ContactChange) -> String {
    let head = format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>"
    );
    let body = match change {
        ContactChange::UserCreated { userid } => format!(
            "<ChangeType><![CDATA[create_user]]></ChangeType><UserID><![CDATA[{userid}]]></UserID>"
        ),
        ContactChange::UserUpdated { userid, new_userid } => format!(
            "<ChangeType><![CDATA[update_user]]></ChangeType><UserID><![CDATA[{userid}]]></UserID>{}",
            new_userid
                .as_ref()
                .map(|n| format!("<NewUserID><![CDATA[{n}]]></NewUserID>"))
                .unwrap_or_default()
        ),
        ContactChange::UserDeleted { userid } => format!(
            "<ChangeType><![CDATA[delete_user]]></ChangeType><UserID><![CDATA[{userid}]]></UserID>"
        ),
        ContactChange::DeptCreated { id } => {
            format!("<ChangeType><![CDATA[create_party]]></ChangeType><Id>{id}</Id>")
        }
        ContactChange::DeptUpdated { id } => {
            format!("<ChangeType><![CDATA[update_party]]></ChangeType><Id>{id}</Id>")
        }
        ContactChange::DeptDeleted { id } => {
            format!("<ChangeType><![CDATA[delete_party]]></ChangeType><Id>{id}</Id>")
        }
    };
    format!("{head}{body}</xml>")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The official create_user example (doc 90970), full fields including ExtAttr.
    const CREATE_USER_FULL: &str = r#"<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType>create_user</ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<Name><![CDATA[张三]]></Name>
	<Department><![CDATA[1,2,3]]></Department>
	<MainDepartment>1</MainDepartment>
	<IsLeaderInDept><![CDATA[1,0,0]]></IsLeaderInDept>
	<DirectLeader><![CDATA[lisi,wangwu]]></DirectLeader>
	<Position><![CDATA[产品经理]]></Position>
	<Mobile>13800000000</Mobile>
	<Gender>1</Gender>
	<Email><![CDATA[zhangsan@gzdev.com]]></Email>
	<Status>1</Status>
	<Avatar><![CDATA[http://wx.qlogo.cn/mmopen/ajNVdqHZLLA3WJ6DSZUfiakYe37PKnQhBIeOQBO4czqrnZDS79FH5Wm5m4X69TBicnHFlhiafvDwklOpZeXYQQ2icg/0]]></Avatar>
	<Alias><![CDATA[zhangsan]]></Alias>
	<Telephone><![CDATA[020-123456]]></Telephone>
	<ExtAttr>
		<Item>
		<Name><![CDATA[爱好]]></Name>
		<Type>0</Type>
		<Text>
			<Value><![CDATA[旅游]]></Value>
		</Text>
		</Item>
		<Item>
		<Name><![CDATA[卡号]]></Name>
		<Type>1</Type>
		<Web>
			<Title><![CDATA[企业微信]]></Title>
			<Url><![CDATA[https://work.weixin.qq.com]]></Url>
		</Web>
		</Item>
	</ExtAttr>
	<Address><![CDATA[广州市]]></Address>
</xml>"#;

    // What the contact-sync assistant sends since 2022-08-15: ids only.
    const CREATE_USER_MINIMAL: &str = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType><![CDATA[create_user]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><Department><![CDATA[1,2]]></Department></xml>";

    #[test]
    fn create_user_full_and_minimal() {
        let m = parse_message(CREATE_USER_FULL).unwrap();
        assert_eq!(
            m,
            CallbackMessage::Contact {
                corp_id: "toUser".into(),
                create_time: 1403610513,
                change: ContactChange::UserCreated {
                    userid: "zhangsan".into()
                },
            }
        );
        let m = parse_message(CREATE_USER_MINIMAL).unwrap();
        assert!(matches!(
            m,
            CallbackMessage::Contact { change: ContactChange::UserCreated { ref userid }, create_time: 1700000000, .. } if userid == "zhangsan"
        ));
    }

    #[test]
    fn update_user_with_new_userid_is_a_rename() {
        let xml = "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType>update_user</ChangeType><UserID><![CDATA[zhangsan]]></UserID><NewUserID><![CDATA[zhangsan001]]></NewUserID><Name><![CDATA[张三]]></Name></xml>";
        let CallbackMessage::Contact { change, .. } = parse_message(xml).unwrap() else {
            panic!("a contact event")
        };
        assert_eq!(
            change,
            ContactChange::UserUpdated {
                userid: "zhangsan".into(),
                new_userid: Some("zhangsan001".into())
            }
        );
        let plain = xml.replace("<NewUserID><![CDATA[zhangsan001]]></NewUserID>", "");
        let CallbackMessage::Contact { change, .. } = parse_message(&plain).unwrap() else {
            panic!("a contact event")
        };
        assert_eq!(
            change,
            ContactChange::UserUpdated {
                userid: "zhangsan".into(),
                new_userid: None
            }
        );
    }

    #[test]
    fn delete_user_and_parties() {
        let ev = |ct: &str, inner: &str| {
            format!(
                "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType>{ct}</ChangeType>{inner}</xml>"
            )
        };
        let change = |xml: String| match parse_message(&xml).unwrap() {
            CallbackMessage::Contact { change, .. } => change,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            change(ev("delete_user", "<UserID><![CDATA[zhangsan]]></UserID>")),
            ContactChange::UserDeleted {
                userid: "zhangsan".into()
            }
        );
        assert_eq!(
            change(ev(
                "create_party",
                "<Id>2</Id><Name><![CDATA[张三]]></Name><ParentId><![CDATA[1]]></ParentId><Order>1</Order>"
            )),
            ContactChange::DeptCreated { id: 2 }
        );
        assert_eq!(
            change(ev(
                "update_party",
                "<Id>2</Id><Name><![CDATA[张三]]></Name><ParentId><![CDATA[1]]></ParentId>"
            )),
            ContactChange::DeptUpdated { id: 2 }
        );
        assert_eq!(
            change(ev("delete_party", "<Id>2</Id>")),
            ContactChange::DeptDeleted { id: 2 }
        );
        // tags and unknown change types are acknowledged, not changes
        assert!(matches!(
            parse_message(&ev("update_tag", "<TagId>1</TagId>")).unwrap(),
            CallbackMessage::Other { .. }
        ));
        // an event without its id is bad input that says which element is missing
        let e = parse_message(&ev("delete_user", "")).unwrap_err();
        assert!(e.message().contains("<UserID>"), "{e}");
        let e = parse_message(&ev("delete_party", "<Id>x</Id>")).unwrap_err();
        assert!(e.message().contains("not a number"), "{e}");
    }

    #[test]
    fn envelope_and_generated_events_roundtrip() {
        let env = parse_envelope("<xml><ToUserName><![CDATA[wwcorp]]></ToUserName><Encrypt><![CDATA[abc=]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>").unwrap();
        assert_eq!(env.to_user_name.as_deref(), Some("wwcorp"));
        assert_eq!(env.encrypt, "abc=");
        assert_eq!(env.agent_id.as_deref(), Some("218"));
        assert!(parse_envelope("<xml><ToUserName>x</ToUserName></xml>").is_err());
        assert!(parse_envelope("not xml").is_err());
        for change in [
            ContactChange::UserCreated { userid: "a".into() },
            ContactChange::UserUpdated {
                userid: "a".into(),
                new_userid: Some("b".into()),
            },
            ContactChange::UserDeleted { userid: "a".into() },
            ContactChange::DeptCreated { id: 7 },
            ContactChange::DeptUpdated { id: 7 },
            ContactChange::DeptDeleted { id: 7 },
        ] {
            let xml = contact_event_xml("wwcorp", 1700000001, &change);
            let m = parse_message(&xml).unwrap();
            assert_eq!(
                m,
                CallbackMessage::Contact {
                    corp_id: "wwcorp".into(),
                    create_time: 1700000001,
                    change: change.clone()
                }
            );
            assert!(m.dedup_key().unwrap().starts_with("wwcorp|1700000001|"));
        }
    }
}
