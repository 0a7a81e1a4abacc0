//! Pure functions between DingTalk JSON and the idsync model.
//!
//! | idsync | DingTalk user |
//! |---|---|
//! | `anchor`, `username` | `userid` |
//! | `display_name` | `name` |
//! | `email` | `email` |
//! | `phone` | `mobile` |
//! | `employee_id` | `job_number` |
//! | `title` | `title` |
//! | `orgs` | `dept_id_list` (as given: the first is the main department) |
//! | `manager` | `manager_userid` (only with `fetch_user_details`, see the config) |
//! | `status` | `active` (`false`: has not activated DingTalk yet → `Disabled`) |
//! | `attrs.unionid`, `attrs.org_email`, `attrs.telephone`, `attrs.work_place`, `attrs.remark`, `attrs.extension`, `attrs.hired_date` | same names |
//! | `attrs.dept_order` | `{"<dept_id>": order}` for non-zero orders (`dept_order` / `dept_order_list`) |
//! | `attrs.leader_in_depts` | dept ids where the user is a leader (`leader` / `leader_in_dept`) |
//! | `attrs.admin`, `attrs.boss` | present only when `true` |
//!
//! | idsync | DingTalk department |
//! |---|---|
//! | `anchor` | `dept_id` (as a string) |
//! | `parent` | `parent_id` (absent for the root) |
//! | `name`, `order` | `name`, `order` |
//! | `attrs.leaders` | `dept_manager_userid_list` (when not empty) |
//! | `attrs.source_identifier` | `source_identifier` |
//!
//! Absent or empty personal fields stay absent (`None`), never empty strings.

use std::collections::BTreeSet;

use idsync_core::{Account, Anchor, Attrs, Error, Org, Result, Status};
use serde_json::{Map, Value};

use crate::client::int_of;

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

fn int_list(v: &Value, key: &str) -> Vec<i64> {
    match v.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(int_of).collect(),
        Some(Value::String(s)) => s.split(',').filter_map(|p| p.trim().parse().ok()).collect(),
        _ => Vec::new(),
    }
}

/// Fields common to list items and details.
fn base_account(v: &Value) -> Result<Account> {
    let userid =
        text(v, "userid").ok_or_else(|| Error::invalid_data("DingTalk user without userid"))?;
    let mut a = Account::new(userid.clone(), userid);
    a.display_name = text(v, "name");
    a.email = text(v, "email");
    a.phone = text(v, "mobile");
    a.employee_id = text(v, "job_number");
    a.title = text(v, "title");
    a.orgs = int_list(v, "dept_id_list")
        .into_iter()
        .map(|d| Anchor::new(d.to_string()))
        .collect();
    a.status = if flag(v, "active") {
        Status::Active
    } else {
        Status::Disabled
    };
    let attrs = &mut a.attrs;
    for key in [
        "unionid",
        "org_email",
        "telephone",
        "work_place",
        "remark",
        "extension",
    ] {
        if let Some(s) = text(v, key) {
            attrs.insert(key.to_owned(), Value::String(s));
        }
    }
    if let Some(h) = v.get("hired_date").and_then(int_of) {
        attrs.insert("hired_date".to_owned(), Value::from(h));
    }
    for key in ["admin", "boss"] {
        if flag(v, key) {
            attrs.insert(key.to_owned(), Value::Bool(true));
        }
    }
    Ok(a)
}

fn put_orders(attrs: &mut Attrs, orders: impl IntoIterator<Item = (i64, i64)>) {
    let map: Map<String, Value> = orders
        .into_iter()
        .filter(|(_, o)| *o != 0)
        .map(|(d, o)| (d.to_string(), Value::from(o)))
        .collect();
    if !map.is_empty() {
        attrs.insert("dept_order".to_owned(), Value::Object(map));
    }
}

fn put_leaders(attrs: &mut Attrs, depts: &[i64], leader_of: &BTreeSet<i64>) {
    let list: Vec<Value> = depts
        .iter()
        .filter(|d| leader_of.contains(d))
        .map(|d| Value::String(d.to_string()))
        .collect();
    if !list.is_empty() {
        attrs.insert("leader_in_depts".to_owned(), Value::Array(list));
    }
}

/// An account from one `v2/user/list` item of department `dept_id`. Complete for users in
/// one department; for users in several, use [`account_from_detail`] (the list item only
/// knows order and leader flag of the queried department).
pub fn account_from_list_item(v: &Value, dept_id: i64) -> Result<Account> {
    let mut a = base_account(v)?;
    let order = v.get("dept_order").and_then(int_of).unwrap_or(0);
    put_orders(&mut a.attrs, [(dept_id, order)]);
    let depts = int_list(v, "dept_id_list");
    let mut leader_of = BTreeSet::new();
    if flag(v, "leader") {
        leader_of.insert(dept_id);
    }
    put_leaders(&mut a.attrs, &depts, &leader_of);
    Ok(a)
}

/// An account from a `v2/user/get` result. `with_manager` keeps `manager_userid`.
pub fn account_from_detail(v: &Value, with_manager: bool) -> Result<Account> {
    let mut a = base_account(v)?;
    let depts = int_list(v, "dept_id_list");
    let mut orders = Vec::new();
    if let Some(Value::Array(list)) = v.get("dept_order_list") {
        for item in list {
            if let (Some(d), Some(o)) = (
                item.get("dept_id").and_then(int_of),
                item.get("order").and_then(int_of),
            ) {
                orders.push((d, o));
            }
        }
    }
    // in dept_id_list order
    orders.sort_by_key(|(d, _)| depts.iter().position(|x| x == d).unwrap_or(usize::MAX));
    put_orders(&mut a.attrs, orders);
    let mut leader_of = BTreeSet::new();
    if let Some(Value::Array(list)) = v.get("leader_in_dept") {
        for item in list {
            if let Some(d) = item.get("dept_id").and_then(int_of) {
                if flag(item, "leader") {
                    leader_of.insert(d);
                }
            }
        }
    }
    put_leaders(&mut a.attrs, &depts, &leader_of);
    if with_manager {
        a.manager = text(v, "manager_userid").map(Anchor::new);
    }
    Ok(a)
}

/// The number of departments a list item belongs to.
pub(crate) fn dept_count(v: &Value) -> usize {
    int_list(v, "dept_id_list").len()
}

/// An org from a `v2/department/get` result.
pub fn org_from_detail(v: &Value) -> Result<Org> {
    let id = v
        .get("dept_id")
        .and_then(int_of)
        .ok_or_else(|| Error::invalid_data("DingTalk department without dept_id"))?;
    let name = text(v, "name").unwrap_or_default();
    let parent = v
        .get("parent_id")
        .and_then(int_of)
        .filter(|p| *p != 0)
        .map(|p| Anchor::new(p.to_string()));
    let mut org = Org::new(id.to_string(), parent, name);
    // DingTalk's default order is 0: read it as "no order" so that None round-trips.
    org.order = v.get("order").and_then(int_of).filter(|o| *o != 0);
    if let Some(Value::Array(list)) = v.get("dept_manager_userid_list") {
        let leaders: Vec<Value> = list
            .iter()
            .filter_map(Value::as_str)
            .map(|s| Value::String(s.to_owned()))
            .collect();
        if !leaders.is_empty() {
            org.attrs
                .insert("leaders".to_owned(), Value::Array(leaders));
        }
    }
    if let Some(s) = text(v, "source_identifier") {
        org.attrs
            .insert("source_identifier".to_owned(), Value::String(s));
    }
    Ok(org)
}

/// The department id in an org anchor.
pub(crate) fn dept_id(anchor: &Anchor) -> Result<i64> {
    anchor.as_str().trim().parse().map_err(|_| {
        Error::invalid_data(format!("{anchor:?} is not a DingTalk dept_id"))
            .with_provider(crate::PROVIDER)
    })
}

fn comma(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Which user body key an idsync account field writes, for text fields.
fn user_text_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "display_name" => "name",
        "email" => "email",
        "phone" => "mobile",
        "employee_id" => "job_number",
        "title" => "title",
        "manager" => "manager_userid",
        "attrs.org_email" => "org_email",
        "attrs.telephone" => "telephone",
        "attrs.work_place" => "work_place",
        "attrs.remark" => "remark",
        "attrs.extension" => "extension",
        _ => return None,
    })
}

/// Adds `dept_id_list` (a comma-separated string) and `dept_order_list` for `orgs`.
fn put_depts(body: &mut Map<String, Value>, orgs: &[Anchor], orders: Option<&Value>) -> Result<()> {
    let ids = orgs.iter().map(dept_id).collect::<Result<Vec<i64>>>()?;
    if ids.len() > 100 {
        return Err(Error::invalid_data(
            "DingTalk allows at most 100 departments per user",
        ));
    }
    body.insert("dept_id_list".to_owned(), Value::String(comma(&ids)));
    if let Some(Value::Object(map)) = orders {
        let list: Vec<Value> = ids
            .iter()
            .map(|d| {
                let o = map.get(&d.to_string()).and_then(int_of).unwrap_or(0);
                serde_json::json!({"dept_id": d, "order": o})
            })
            .collect();
        body.insert("dept_order_list".to_owned(), Value::Array(list));
    }
    Ok(())
}

/// The body of `v2/user/create` for an account. `userid` is the account's `username` when
/// it is a valid userid (kept as the anchor), otherwise DingTalk generates one.
pub fn user_create_body(a: &Account) -> Result<Value> {
    user_create_body_with(a, false)
}

/// [`user_create_body`]; with `exclusive`, a person without a mobile number becomes an
/// exclusive account (`exclusive_account`, `exclusive_account_type: "dingtalk"`, `login_id`).
pub fn user_create_body_with(a: &Account, exclusive: bool) -> Result<Value> {
    let mut body = Map::new();
    let name = a
        .display_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| a.username.clone());
    if name.trim().is_empty() {
        return Err(Error::invalid_data(
            "DingTalk needs a name to create a user",
        ));
    }
    body.insert("name".to_owned(), Value::String(name));
    match a.phone.clone() {
        Some(mobile) => {
            body.insert("mobile".to_owned(), Value::String(mobile));
        }
        None if exclusive && !a.username.trim().is_empty() => {
            body.insert("exclusive_account".to_owned(), Value::Bool(true));
            body.insert(
                "exclusive_account_type".to_owned(),
                Value::String("dingtalk".to_owned()),
            );
            body.insert("login_id".to_owned(), Value::String(a.username.clone()));
        }
        None => {
            return Err(Error::invalid_data(
                "DingTalk needs a mobile number to create a user (or exclusive_accounts)",
            ));
        }
    }
    if a.orgs.is_empty() {
        return Err(Error::invalid_data(
            "DingTalk needs at least one department to create a user",
        ));
    }
    put_depts(&mut body, &a.orgs, a.attrs.get("dept_order"))?;
    let uname = a.username.trim();
    if !uname.is_empty() && uname.chars().count() <= 64 {
        body.insert("userid".to_owned(), Value::String(uname.to_owned()));
    }
    for (field, key) in [
        ("email", "email"),
        ("employee_id", "job_number"),
        ("title", "title"),
        ("manager", "manager_userid"),
        ("attrs.org_email", "org_email"),
        ("attrs.telephone", "telephone"),
        ("attrs.work_place", "work_place"),
        ("attrs.remark", "remark"),
        ("attrs.extension", "extension"),
    ] {
        let v = idsync_core::Entity::get(a, field);
        if let Some(s) = value_text(&v) {
            body.insert(key.to_owned(), Value::String(s));
        }
    }
    if let Some(h) = a.attrs.get("hired_date").and_then(int_of) {
        body.insert("hired_date".to_owned(), Value::from(h));
    }
    Ok(Value::Object(body))
}

/// The body of `v2/user/update` for a patch. Cleared fields go to `force_update_fields`.
/// Fields DingTalk cannot write (`username`, `status`, `attrs.unionid`, ...) are skipped and
/// returned as the second value.
pub fn user_update_body(userid: &str, patch: &idsync_core::Patch) -> Result<(Value, Vec<String>)> {
    let mut body = Map::new();
    body.insert("userid".to_owned(), Value::String(userid.to_owned()));
    let mut clear: Vec<&str> = Vec::new();
    let mut skipped = Vec::new();
    for (field, value) in patch {
        if let Some(key) = user_text_key(field) {
            match value_text(value) {
                Some(s) => {
                    body.insert(key.to_owned(), Value::String(s));
                }
                None if matches!(key, "name" | "mobile") => {
                    return Err(Error::invalid_data(format!(
                        "DingTalk cannot clear {field} of a user"
                    )));
                }
                None => clear.push(key),
            }
            continue;
        }
        match field.as_str() {
            "orgs" => {
                let orgs: Vec<Anchor> = match value {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(value_text)
                        .map(Anchor::new)
                        .collect(),
                    _ => Vec::new(),
                };
                if orgs.is_empty() {
                    return Err(Error::invalid_data("a DingTalk user needs a department"));
                }
                put_depts(&mut body, &orgs, patch.get("attrs.dept_order"))?;
            }
            "attrs.dept_order" => {
                if !patch.contains_key("orgs") {
                    if let Value::Object(map) = value {
                        let list: Vec<Value> = map
                            .iter()
                            .filter_map(|(d, o)| {
                                Some(serde_json::json!({"dept_id": d.parse::<i64>().ok()?, "order": int_of(o)?}))
                            })
                            .collect();
                        body.insert("dept_order_list".to_owned(), Value::Array(list));
                    }
                }
            }
            "attrs.hired_date" => match int_of(value) {
                Some(h) => {
                    body.insert("hired_date".to_owned(), Value::from(h));
                }
                None => clear.push("hired_date"),
            },
            other => skipped.push(other.to_owned()),
        }
    }
    if !clear.is_empty() {
        body.insert(
            "force_update_fields".to_owned(),
            Value::String(clear.join(",")),
        );
    }
    Ok((Value::Object(body), skipped))
}

/// The body of `v2/department/create` for an org under `parent_id`.
pub fn dept_create_body(org: &Org, parent_id: i64) -> Result<Value> {
    check_dept_name(&org.name)?;
    let mut body = Map::new();
    body.insert("name".to_owned(), Value::String(org.name.clone()));
    body.insert("parent_id".to_owned(), Value::from(parent_id));
    if let Some(o) = org.order {
        body.insert("order".to_owned(), Value::from(o));
    }
    if let Some(Value::String(s)) = org.attrs.get("source_identifier") {
        body.insert("source_identifier".to_owned(), Value::String(s.clone()));
    }
    Ok(Value::Object(body))
}

/// DingTalk department names: 1–64 characters, no `-`, `,` or `，`.
pub fn check_dept_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if !(1..=64).contains(&n) || name.contains(['-', ',', '，']) {
        return Err(Error::invalid_data(format!(
            "{name:?} is not a valid DingTalk department name (1-64 characters, no '-', ',' or '，')"
        ))
        .with_provider(crate::PROVIDER));
    }
    Ok(())
}

/// The body of `v2/department/update` for a patch; unsupported fields are returned.
pub fn dept_update_body(dept: i64, patch: &idsync_core::Patch) -> Result<(Value, Vec<String>)> {
    let mut body = Map::new();
    body.insert("dept_id".to_owned(), Value::from(dept));
    let mut clear = Vec::new();
    let mut skipped = Vec::new();
    for (field, value) in patch {
        match field.as_str() {
            "name" => {
                let name = value_text(value).unwrap_or_default();
                check_dept_name(&name)?;
                body.insert("name".to_owned(), Value::String(name));
            }
            "order" => {
                body.insert("order".to_owned(), Value::from(int_of(value).unwrap_or(0)));
            }
            "parent" => match value_text(value) {
                Some(p) => {
                    let id = dept_id(&Anchor::new(p))?;
                    body.insert("parent_id".to_owned(), Value::from(id));
                }
                None => skipped.push(field.clone()),
            },
            "attrs.source_identifier" => match value_text(value) {
                Some(s) => {
                    body.insert("source_identifier".to_owned(), Value::String(s));
                }
                None => clear.push("source_identifier"),
            },
            "attrs.leaders" => {
                let ids: Vec<String> = match value {
                    Value::Array(items) => items.iter().filter_map(value_text).collect(),
                    _ => Vec::new(),
                };
                if ids.is_empty() {
                    clear.push("dept_manager_userid_list");
                } else {
                    body.insert(
                        "dept_manager_userid_list".to_owned(),
                        Value::String(ids.join(",")),
                    );
                }
            }
            other => skipped.push(other.to_owned()),
        }
    }
    if !clear.is_empty() {
        body.insert(
            "force_update_fields".to_owned(),
            Value::String(clear.join(",")),
        );
    }
    Ok((Value::Object(body), skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn golden_list_items() {
        let page = fixture("user_list_page.json");
        let list = page["result"]["list"].as_array().unwrap();
        let got: Vec<Account> = list
            .iter()
            .map(|i| account_from_list_item(i, 100).unwrap())
            .collect();
        let want: Vec<Account> =
            serde_json::from_value(fixture("user_list_page.accounts.json")).unwrap();
        assert_eq!(got, want);
        // the sparse user has no personal fields at all, not empty strings
        let sparse = &got[1];
        assert_eq!(sparse.email, None);
        assert_eq!(sparse.phone, None);
        assert_eq!(sparse.status, Status::Disabled);
    }

    #[test]
    fn golden_detail() {
        let d = fixture("user_get.json");
        let got = account_from_detail(&d["result"], true).unwrap();
        let want: Account = serde_json::from_value(fixture("user_get.account.json")).unwrap();
        assert_eq!(got, want);
        let no_mgr = account_from_detail(&d["result"], false).unwrap();
        assert_eq!(no_mgr.manager, None);
    }

    #[test]
    fn golden_departments() {
        let root = fixture("department_get_root.json");
        let org = org_from_detail(&root["result"]).unwrap();
        assert_eq!(org.anchor.as_str(), "1");
        assert_eq!(org.parent, None);
        let sub = fixture("department_get.json");
        let got = org_from_detail(&sub["result"]).unwrap();
        let want: Org = serde_json::from_value(fixture("department_get.org.json")).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn string_typed_numbers_are_read() {
        let item = json!({"userid": "u1", "name": "A", "dept_id_list": ["2", 3], "active": "true",
                          "dept_order": "7", "leader": true, "email": ""});
        let a = account_from_list_item(&item, 2).unwrap();
        assert_eq!(a.orgs, vec![Anchor::new("2"), Anchor::new("3")]);
        assert_eq!(a.status, Status::Active);
        assert_eq!(a.email, None);
        assert_eq!(a.attrs["dept_order"], json!({"2": 7}));
        assert_eq!(a.attrs["leader_in_depts"], json!(["2"]));
    }

    #[test]
    fn create_body_uses_comma_string() {
        let mut a = Account::new("x", "wang.fang");
        a.display_name = Some("王芳".into());
        a.phone = Some("13800000000".into());
        a.orgs = vec!["2".into(), "3".into()];
        a.email = Some("wf@example.com".into());
        let b = user_create_body(&a).unwrap();
        assert_eq!(b["dept_id_list"], json!("2,3"));
        assert_eq!(b["userid"], json!("wang.fang"));
        assert_eq!(b["mobile"], json!("13800000000"));
        assert!(b.get("title").is_none());
        a.phone = None;
        assert!(user_create_body(&a).is_err());
    }

    #[test]
    fn update_body_clears_with_force_update_fields() {
        let mut p = idsync_core::Patch::new();
        p.insert("title".into(), Value::Null);
        p.insert("email".into(), json!("n@example.com"));
        p.insert("orgs".into(), json!(["5"]));
        p.insert("status".into(), json!("disabled"));
        let (b, skipped) = user_update_body("u1", &p).unwrap();
        assert_eq!(b["force_update_fields"], json!("title"));
        assert_eq!(b["email"], json!("n@example.com"));
        assert_eq!(b["dept_id_list"], json!("5"));
        assert_eq!(skipped, vec!["status".to_owned()]);
        let mut p = idsync_core::Patch::new();
        p.insert("display_name".into(), Value::Null);
        assert!(user_update_body("u1", &p).is_err());
    }

    #[test]
    fn dept_names_are_checked() {
        assert!(check_dept_name("研发中心").is_ok());
        assert!(check_dept_name("R-D").is_err());
        assert!(check_dept_name("a,b").is_err());
        assert!(check_dept_name("a，b").is_err());
        assert!(check_dept_name("").is_err());
        let mut p = idsync_core::Patch::new();
        p.insert("attrs.leaders".into(), json!(["u1", "u2"]));
        p.insert("name".into(), json!("新名"));
        let (b, _) = dept_update_body(5, &p).unwrap();
        assert_eq!(b["dept_manager_userid_list"], json!("u1,u2"));
        assert_eq!(b["name"], json!("新名"));
    }
}
