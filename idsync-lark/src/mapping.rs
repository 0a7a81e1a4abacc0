//! Pure functions between Lark's contact JSON and idsync's [`Account`] / [`Org`].
//!
//! | idsync | Lark user |
//! |---|---|
//! | `anchor` | the `user_id_type` field: `union_id` (default), `open_id` or `user_id` |
//! | `username` | `user_id` (absent without the `contact:user.employee_id:readonly` scope: then `email`, then the anchor) |
//! | `display_name` | `name` |
//! | `email` | `email` |
//! | `phone` | `mobile` (E.164) |
//! | `employee_id` | `employee_no` |
//! | `title` | `job_title` |
//! | `orgs` | `department_ids`, the one flagged `orders[].is_primary_dept` first; the root `"0"` is no org |
//! | `manager` | `leader_user_id` (of the same id type) |
//! | `status` | active when `is_activated && !is_frozen && !is_resigned && !is_exited` |
//!
//! | idsync | Lark department |
//! |---|---|
//! | `anchor` | `open_department_id` (system-made, immutable) |
//! | `parent` | `parent_department_id`; `"0"` (the root) is no parent |
//! | `name` | `name` |
//! | `order` | `order`: a string in REST answers, an integer in events; both are read; `0` (unsorted) is no order |
//!
//! Fields the app has no scope for are absent in Lark's answers and stay `None` here.

use idsync_core::{Account, Anchor, Attrs, Error, Org, Patch, Result, Status};
use idsync_http::int_of;
use serde_json::{Map, Value, json};

use crate::PROVIDER;
use crate::config::UserIdType;

/// The root department's id (both id types).
pub const ROOT: &str = "0";

/// How users are read.
#[derive(Debug, Clone, Copy)]
pub struct UserMapping {
    /// The anchor's id type.
    pub id_type: UserIdType,
    /// Carry extra fields in `attrs`.
    pub extra_attrs: bool,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn flag(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn bad(msg: String) -> Error {
    Error::invalid_data(msg).with_provider(PROVIDER)
}

/// The account status from `status{is_frozen, is_resigned, is_activated, is_exited}`.
pub fn status_of(user: &Value) -> Status {
    let s = user.get("status").unwrap_or(&Value::Null);
    let active = flag(s, "is_activated")
        && !flag(s, "is_frozen")
        && !flag(s, "is_resigned")
        && !flag(s, "is_exited");
    if active {
        Status::Active
    } else {
        Status::Disabled
    }
}

/// The user's departments, the primary one (`orders[].is_primary_dept`) first, the root
/// left out.
pub fn departments_of(user: &Value) -> Vec<Anchor> {
    let mut ids: Vec<String> = user
        .get("department_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let primary = user
        .get("orders")
        .and_then(Value::as_array)
        .and_then(|orders| {
            orders
                .iter()
                .find(|o| flag(o, "is_primary_dept"))
                .and_then(|o| text(o, "department_id"))
        });
    if let Some(p) = primary
        && let Some(i) = ids.iter().position(|d| *d == p)
    {
        let d = ids.remove(i);
        ids.insert(0, d);
    }
    ids.into_iter()
        .filter(|d| d != ROOT)
        .map(Anchor::new)
        .collect()
}

/// An [`Account`] from a Lark user object (REST `data.user` / `items[]`, or an event's
/// `object`).
pub fn account_from_user(user: &Value, map: &UserMapping) -> Result<Account> {
    let key = map.id_type.as_str();
    let anchor = text(user, key).ok_or_else(|| {
        bad(format!(
            "a Lark user without {key} (the anchor's id type): is user_id_type={key} sent, and the scope for it granted?"
        ))
    })?;
    let username = text(user, "user_id")
        .or_else(|| text(user, "email"))
        .unwrap_or_else(|| anchor.clone());
    let mut a = Account::new(Anchor::new(anchor), username);
    a.display_name = text(user, "name");
    a.email = text(user, "email");
    a.phone = text(user, "mobile");
    a.employee_id = text(user, "employee_no");
    a.title = text(user, "job_title");
    a.orgs = departments_of(user);
    a.manager = text(user, "leader_user_id").map(Anchor::new);
    a.status = status_of(user);
    if map.extra_attrs {
        let mut attrs = Attrs::new();
        for k in [
            "open_id",
            "union_id",
            "user_id",
            "en_name",
            "nickname",
            "enterprise_email",
            "city",
            "country",
            "work_station",
        ] {
            if let Some(v) = text(user, k) {
                attrs.insert(k.to_owned(), Value::String(v));
            }
        }
        if let Some(t) = user.get("employee_type").and_then(int_of) {
            attrs.insert("employee_type".into(), json!(t));
        }
        a.attrs = attrs;
    }
    Ok(a)
}

/// An [`Org`] from a Lark department object (REST, `order` a string; or an event's
/// `object`, `order` an integer).
pub fn org_from_department(d: &Value, extra_attrs: bool) -> Result<Org> {
    let anchor = text(d, "open_department_id")
        .ok_or_else(|| bad("a Lark department without open_department_id".to_owned()))?;
    let parent = text(d, "parent_department_id").filter(|p| p != ROOT);
    let name = text(d, "name").unwrap_or_default();
    let mut o = Org::new(Anchor::new(anchor), parent.map(Anchor::new), name);
    // 0 is Lark's "not sorted": it reads as no order, so that "no order" round-trips
    o.order = d.get("order").and_then(int_of).filter(|o| *o != 0);
    if extra_attrs {
        let mut attrs = Attrs::new();
        for k in ["department_id", "leader_user_id", "chat_id"] {
            if let Some(v) = text(d, k) {
                attrs.insert(k.to_owned(), Value::String(v));
            }
        }
        if let Some(en) = d
            .pointer("/i18n_name/en_us")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            attrs.insert("name_en".into(), json!(en));
        }
        o.attrs = attrs;
    }
    Ok(o)
}

fn orders_of(depts: &[String]) -> Value {
    Value::Array(
        depts
            .iter()
            .enumerate()
            .map(|(i, d)| {
                json!({"department_id": d, "user_order": 0, "department_order": 0,
                       "is_primary_dept": i == 0})
            })
            .collect(),
    )
}

fn dept_list(orgs: &[Anchor]) -> Vec<String> {
    if orgs.is_empty() {
        vec![ROOT.to_owned()]
    } else {
        orgs.iter().map(|o| o.as_str().to_owned()).collect()
    }
}

fn anchors_of(v: &Value) -> Vec<Anchor> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(Anchor::new)
            .collect(),
        Value::String(s) => vec![Anchor::new(s.clone())],
        _ => Vec::new(),
    }
}

fn str_or_empty(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// User attributes a job may write (`attrs.<name>` → the Lark field of the same name).
const WRITABLE_USER_ATTRS: &[&str] = &[
    "en_name",
    "nickname",
    "enterprise_email",
    "city",
    "country",
    "work_station",
];

/// The body of `POST contact/v3/users`: the required `name`, `mobile`, `department_ids`
/// (the root `"0"` for none) and `employee_type` (1, regular, unless `attrs.employee_type`),
/// `user_id` = username, and `orders` with the primary department flagged.
pub fn user_create_body(a: &Account) -> Result<Value> {
    if a.phone.is_none() && a.email.is_none() {
        return Err(bad(format!(
            "account {}: Lark needs a mobile number (or an email) to create a user",
            a.username
        )));
    }
    let depts = dept_list(&a.orgs);
    let mut m = Map::new();
    m.insert(
        "name".into(),
        json!(a.display_name.clone().unwrap_or_else(|| a.username.clone())),
    );
    m.insert("user_id".into(), json!(a.username));
    if let Some(v) = &a.phone {
        m.insert("mobile".into(), json!(v));
    }
    if let Some(v) = &a.email {
        m.insert("email".into(), json!(v));
    }
    if let Some(v) = &a.employee_id {
        m.insert("employee_no".into(), json!(v));
    }
    if let Some(v) = &a.title {
        m.insert("job_title".into(), json!(v));
    }
    if let Some(v) = &a.manager {
        m.insert("leader_user_id".into(), json!(v.as_str()));
    }
    m.insert("orders".into(), orders_of(&depts));
    m.insert("department_ids".into(), json!(depts));
    let employee_type = a.attrs.get("employee_type").and_then(int_of).unwrap_or(1);
    m.insert("employee_type".into(), json!(employee_type));
    for k in WRITABLE_USER_ATTRS {
        if let Some(v) = a.attrs.get(*k).and_then(Value::as_str) {
            m.insert((*k).into(), json!(v));
        }
    }
    Ok(Value::Object(m))
}

/// The body of `PATCH contact/v3/users/:id` for changed fields (orders always go with
/// `department_ids`, as Lark requires: 44002 otherwise).
pub fn user_update_body(anchor: &Anchor, changes: &Patch) -> Result<Value> {
    let mut m = Map::new();
    for (field, value) in changes {
        match field.as_str() {
            "display_name" => {
                m.insert("name".into(), json!(str_or_empty(value)));
            }
            "username" => {
                m.insert("user_id".into(), json!(str_or_empty(value)));
            }
            "email" => {
                m.insert("email".into(), json!(str_or_empty(value)));
            }
            "phone" => {
                m.insert("mobile".into(), json!(str_or_empty(value)));
            }
            "employee_id" => {
                m.insert("employee_no".into(), json!(str_or_empty(value)));
            }
            "title" => {
                m.insert("job_title".into(), json!(str_or_empty(value)));
            }
            "manager" => {
                m.insert("leader_user_id".into(), json!(str_or_empty(value)));
            }
            "orgs" => {
                let depts = dept_list(&anchors_of(value));
                m.insert("orders".into(), orders_of(&depts));
                m.insert("department_ids".into(), json!(depts));
            }
            "status" => {
                let disabled =
                    matches!(value.as_str(), Some(s) if s.eq_ignore_ascii_case("disabled"));
                m.insert("is_frozen".into(), json!(disabled));
            }
            other => match other
                .strip_prefix("attrs.")
                .filter(|a| WRITABLE_USER_ATTRS.contains(a) || *a == "employee_type")
            {
                Some("employee_type") => {
                    m.insert("employee_type".into(), json!(int_of(value).unwrap_or(1)));
                }
                Some(f) => {
                    m.insert(f.into(), json!(str_or_empty(value)));
                }
                None => {
                    return Err(Error::unsupported(format!(
                        "account {anchor}: Lark has no writable field for {other:?}"
                    ))
                    .with_provider(PROVIDER));
                }
            },
        }
    }
    Ok(Value::Object(m))
}

/// The body of `POST contact/v3/departments`: `name`, `parent_department_id` (`"0"` for
/// a root org), `order` as a string, optional `attrs.department_id` / `leader_user_id` /
/// `name_en`.
pub fn dept_create_body(o: &Org) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(o.name));
    m.insert(
        "parent_department_id".into(),
        json!(o.parent.as_ref().map_or(ROOT, |p| p.as_str())),
    );
    if let Some(order) = o.order {
        m.insert("order".into(), json!(order.to_string()));
    }
    for k in ["department_id", "leader_user_id"] {
        if let Some(v) = o.attrs.get(k).and_then(Value::as_str) {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(en) = o.attrs.get("name_en").and_then(Value::as_str) {
        m.insert("i18n_name".into(), json!({"en_us": en}));
    }
    Value::Object(m)
}

/// The body of `PATCH contact/v3/departments/:id` for changed fields.
pub fn dept_update_body(anchor: &Anchor, changes: &Patch) -> Result<Value> {
    let mut m = Map::new();
    for (field, value) in changes {
        match field.as_str() {
            "name" => {
                m.insert("name".into(), json!(str_or_empty(value)));
            }
            "order" => {
                let o = int_of(value).unwrap_or(0);
                m.insert("order".into(), json!(o.to_string()));
            }
            "parent" => {
                let p = value.as_str().unwrap_or(ROOT);
                m.insert("parent_department_id".into(), json!(p));
            }
            "attrs.leader_user_id" => {
                m.insert("leader_user_id".into(), json!(str_or_empty(value)));
            }
            "attrs.name_en" => {
                m.insert("i18n_name".into(), json!({"en_us": str_or_empty(value)}));
            }
            other => {
                return Err(Error::unsupported(format!(
                    "department {anchor}: Lark has no writable field for {other:?}"
                ))
                .with_provider(PROVIDER));
            }
        }
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> UserMapping {
        UserMapping {
            id_type: UserIdType::UnionId,
            extra_attrs: true,
        }
    }

    #[test]
    fn user_fields_primary_first_and_status() {
        let u = json!({
            "union_id": "on_94a1ee5551019f18cd73d9f111898cf2",
            "open_id": "ou_7dab8a3d3cdcc9da365777c7ad535d62",
            "user_id": "zhangsan", "name": "张三", "email": "zs@example.com",
            "mobile": "+8613800000001", "employee_no": "E001", "job_title": "工程师",
            "department_ids": ["od-aaa", "od-bbb", "0"],
            "orders": [{"department_id": "od-aaa", "is_primary_dept": false},
                       {"department_id": "od-bbb", "is_primary_dept": true}],
            "leader_user_id": "on_boss",
            "status": {"is_frozen": false, "is_resigned": false, "is_activated": true,
                       "is_exited": false, "is_unjoin": false},
            "employee_type": 1
        });
        let a = account_from_user(&u, &map()).unwrap();
        assert_eq!(a.anchor.as_str(), "on_94a1ee5551019f18cd73d9f111898cf2");
        assert_eq!(a.username, "zhangsan");
        assert_eq!(a.orgs, vec![Anchor::new("od-bbb"), Anchor::new("od-aaa")]);
        assert_eq!(a.manager, Some(Anchor::new("on_boss")));
        assert_eq!(a.status, Status::Active);
        assert_eq!(
            a.attrs["open_id"],
            json!("ou_7dab8a3d3cdcc9da365777c7ad535d62")
        );
        for (k, v) in [
            ("is_frozen", true),
            ("is_resigned", true),
            ("is_exited", true),
            ("is_activated", false),
        ] {
            let mut x = u.clone();
            x["status"][k] = json!(v);
            assert_eq!(status_of(&x), Status::Disabled, "{k}");
        }
        // fields without scope are absent: user_id falls back to email; no anchor field fails
        let mut thin = u.clone();
        thin.as_object_mut().unwrap().remove("user_id");
        thin.as_object_mut().unwrap().remove("mobile");
        let a = account_from_user(&thin, &map()).unwrap();
        assert_eq!(a.username, "zs@example.com");
        assert_eq!(a.phone, None);
        let open = UserMapping {
            id_type: UserIdType::OpenId,
            extra_attrs: false,
        };
        assert_eq!(
            account_from_user(&u, &open).unwrap().anchor.as_str(),
            "ou_7dab8a3d3cdcc9da365777c7ad535d62"
        );
        let e = account_from_user(&json!({"name": "x"}), &map()).unwrap_err();
        assert!(e.message().contains("union_id"), "{e}");
    }

    #[test]
    fn order_is_a_string_in_rest_and_an_integer_in_events() {
        let rest = json!({"name": "研发", "open_department_id": "od-1",
            "parent_department_id": "0", "department_id": "D1", "order": "100"});
        let o = org_from_department(&rest, true).unwrap();
        assert_eq!(o.order, Some(100));
        let unsorted = json!({"name": "x", "open_department_id": "od-3", "order": "0"});
        assert_eq!(org_from_department(&unsorted, false).unwrap().order, None);
        assert_eq!(o.parent, None);
        assert_eq!(o.attrs["department_id"], json!("D1"));
        let event = json!({"name": "研发", "open_department_id": "od-2",
            "parent_department_id": "od-1", "order": 200});
        let o = org_from_department(&event, false).unwrap();
        assert_eq!(o.order, Some(200));
        assert_eq!(o.parent, Some(Anchor::new("od-1")));
        assert!(o.attrs.is_empty());
    }

    #[test]
    fn bodies() {
        let mut a = Account::new("x", "lisi");
        a.display_name = Some("李四".into());
        a.email = Some("ls@example.com".into());
        a.orgs = vec![Anchor::new("od-2"), Anchor::new("od-1")];
        let b = user_create_body(&a).unwrap();
        assert_eq!(b["department_ids"], json!(["od-2", "od-1"]));
        assert_eq!(b["orders"][0]["is_primary_dept"], json!(true));
        assert_eq!(b["employee_type"], json!(1));
        assert_eq!(b["user_id"], json!("lisi"));
        a.email = None;
        assert!(user_create_body(&a).is_err());
        let mut p = Patch::new();
        p.insert("orgs".into(), json!(["od-9"]));
        p.insert("status".into(), json!("disabled"));
        let b = user_update_body(&Anchor::new("x"), &p).unwrap();
        assert_eq!(b["department_ids"], json!(["od-9"]));
        assert_eq!(b["orders"][0]["department_id"], json!("od-9"));
        assert_eq!(b["is_frozen"], json!(true));
        let mut bad = Patch::new();
        bad.insert("attrs.secret_thing".into(), json!("v"));
        assert!(user_update_body(&Anchor::new("x"), &bad).is_err());
        let mut o = Org::new("p", None, "Root team");
        o.order = Some(5);
        let b = dept_create_body(&o);
        assert_eq!(b["parent_department_id"], json!("0"));
        assert_eq!(b["order"], json!("5"));
    }
}
