//! Pure functions between WeCom JSON and the idsync model.
//!
//! | idsync | WeCom user (`user/get`) |
//! |---|---|
//! | `anchor`, `username` | `userid` |
//! | `display_name` | `name` |
//! | `email` | `email` |
//! | `phone` | `mobile` |
//! | `title` | `position` |
//! | `employee_id` | the `extattr` text attribute named by `employee_id_attr` (WeCom has no employee-number field) |
//! | `orgs` | `department`, with `main_department` moved first |
//! | `manager` | `direct_leader[0]` |
//! | `status` | `status`: 1 active, 4 not activated → `Active`; 2 disabled, 5 left → `Disabled` |
//! | `attrs.alias`, `attrs.telephone`, `attrs.address`, `attrs.biz_mail`, `attrs.english_name`, `attrs.open_userid`, `attrs.external_position` | same names |
//! | `attrs.gender` | `"male"` / `"female"` (`"0"`, unknown, stays absent) |
//! | `attrs.leader_in_depts` | departments where `is_leader_in_dept` is 1 |
//! | `attrs.dept_order` | `{"<dept>": order}`, normalised as below, for non-zero orders |
//! | `attrs.direct_leaders` | all of `direct_leader` when there is more than one |
//! | `attrs.wecom_status` | `"not_activated"` (4) or `"left"` (5) |
//!
//! | idsync | WeCom department |
//! |---|---|
//! | `anchor` | `id` (as a string) |
//! | `parent` | `parentid` (0, the root's parent, is none) |
//! | `name` | `name` |
//! | `order` | `order`, normalised |
//! | `attrs.name_en`, `attrs.leaders` | `name_en`, `department_leader` (when not empty) |
//!
//! The `attrs` rows are filled only with `extra_attrs`. Withheld fields (since 2022-06-20
//! self-built apps get no `mobile`, `email`, `gender`, … from `user/get`) are absent or empty
//! in WeCom and stay absent (`None`) here, never empty strings.
//!
//! **Order.** WeCom shows a bigger `order` first; idsync sorts smaller first. The mapping is
//! `idsync = 4294967295 - wecom` (a bijection on `[0, 2^32)`), and WeCom's default `0` is
//! `None` so that "no order" round-trips. Writing clamps idsync orders into `[0, 2^32)`.

use std::collections::{BTreeSet, HashMap};

use idsync_core::{Account, Anchor, Attrs, Error, Org, Result, Status};
use serde_json::{Map, Value, json};

/// The largest WeCom `order` (`2^32 - 1`).
pub const MAX_ORDER: i64 = 4_294_967_295;

/// How members are mapped: the corp's own department, whether extra attributes are
/// carried, and which custom text attribute (`extattr`, defined in the admin console,
/// e.g. `工号`) holds the employee number (WeCom has no such field of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMapping {
    /// The department that is the corp itself (1).
    pub root: i64,
    /// Fill `attrs` (see the table above).
    pub extra_attrs: bool,
    /// The `extattr` text attribute that is `employee_id` (`None`: no employee numbers).
    pub employee_id_attr: Option<String>,
}

impl UserMapping {
    /// The mapping with root `root`, extra attributes and no employee-number attribute.
    pub fn new(root: i64) -> Self {
        UserMapping {
            root,
            extra_attrs: true,
            employee_id_attr: None,
        }
    }
}

/// The text value of the `extattr` attribute `name`.
fn extattr_text(v: &Value, name: &str) -> Option<String> {
    v.get("extattr")?
        .get("attrs")?
        .as_array()?
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|a| a.get("text")?.get("value")?.as_str())
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

fn extattr_body(name: &str, value: &str) -> Value {
    json!({"attrs": [{"type": 0, "name": name, "text": {"value": value}}]})
}

/// An integer from a JSON number or a numeric string.
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn int_list(v: &Value, key: &str) -> Vec<i64> {
    match v.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(int_of).collect(),
        Some(Value::String(s)) => s.split(',').filter_map(|p| p.trim().parse().ok()).collect(),
        _ => Vec::new(),
    }
}

/// WeCom's `order` (bigger first, 0 = unset) as idsync's (smaller first).
pub fn order_from_wecom(order: i64) -> Option<i64> {
    (order > 0).then(|| MAX_ORDER - order.min(MAX_ORDER))
}

/// idsync's order as WeCom's: `None` is 0 (unset), others are clamped into `[0, 2^32)`.
pub fn order_to_wecom(order: Option<i64>) -> i64 {
    order.map_or(0, |o| MAX_ORDER - o.clamp(0, MAX_ORDER))
}

/// An account from a `user/get` (or `user/list` item) object. `root` is the department
/// that is the tenant itself: membership in it is no org membership.
pub fn account_from_user(v: &Value, m: &UserMapping) -> Result<Account> {
    let (root, extra_attrs) = (m.root, m.extra_attrs);
    let userid =
        text(v, "userid").ok_or_else(|| Error::invalid_data("WeCom user without userid"))?;
    let mut a = Account::new(userid.clone(), userid);
    // third-party apps get the userid instead of the name: that is no display name
    a.display_name = text(v, "name").filter(|n| n != a.anchor.as_str());
    a.email = text(v, "email");
    a.phone = text(v, "mobile");
    a.title = text(v, "position");
    a.employee_id = m
        .employee_id_attr
        .as_deref()
        .and_then(|name| extattr_text(v, name));

    let depts = int_list(v, "department");
    let main = v.get("main_department").and_then(int_of).filter(|m| *m > 0);
    let mut ordered: Vec<i64> = Vec::with_capacity(depts.len() + 1);
    if let Some(m) = main {
        ordered.push(m);
    }
    for d in &depts {
        if !ordered.contains(d) {
            ordered.push(*d);
        }
    }
    a.orgs = ordered
        .iter()
        .filter(|d| **d != root)
        .map(|d| Anchor::new(d.to_string()))
        .collect();

    let leaders: Vec<String> = match v.get("direct_leader") {
        Some(Value::Array(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    a.manager = leaders.first().map(Anchor::new);

    let status = v.get("status").and_then(int_of).unwrap_or(1);
    a.status = match status {
        2 | 5 => Status::Disabled,
        _ => Status::Active,
    };

    if extra_attrs {
        let attrs = &mut a.attrs;
        for key in [
            "alias",
            "telephone",
            "address",
            "biz_mail",
            "english_name",
            "open_userid",
            "external_position",
        ] {
            if let Some(s) = text(v, key) {
                attrs.insert(key.to_owned(), Value::String(s));
            }
        }
        match text(v, "gender").as_deref() {
            Some("1") => {
                attrs.insert("gender".into(), json!("male"));
            }
            Some("2") => {
                attrs.insert("gender".into(), json!("female"));
            }
            _ => {}
        }
        let flags = int_list(v, "is_leader_in_dept");
        let leader_of: BTreeSet<i64> = depts
            .iter()
            .zip(flags.iter())
            .filter(|(_, f)| **f == 1)
            .map(|(d, _)| *d)
            .collect();
        let list: Vec<Value> = ordered
            .iter()
            .filter(|d| leader_of.contains(d))
            .map(|d| Value::String(d.to_string()))
            .collect();
        if !list.is_empty() {
            attrs.insert("leader_in_depts".into(), Value::Array(list));
        }
        let orders = int_list(v, "order");
        let map: Map<String, Value> = depts
            .iter()
            .zip(orders.iter())
            .filter_map(|(d, o)| order_from_wecom(*o).map(|n| (d.to_string(), Value::from(n))))
            .collect();
        if !map.is_empty() {
            attrs.insert("dept_order".into(), Value::Object(map));
        }
        if leaders.len() > 1 {
            attrs.insert("direct_leaders".into(), json!(leaders));
        }
        match status {
            4 => {
                attrs.insert("wecom_status".into(), json!("not_activated"));
            }
            5 => {
                attrs.insert("wecom_status".into(), json!("left"));
            }
            _ => {}
        }
    }
    Ok(a)
}

/// An org from a `department/get` object (or a `department/list` item). The root's
/// children get `parent: None`.
pub fn org_from_department(v: &Value, root: i64, extra_attrs: bool) -> Result<Org> {
    let id = v
        .get("id")
        .and_then(int_of)
        .ok_or_else(|| Error::invalid_data("WeCom department without id"))?;
    let parent = v
        .get("parentid")
        .and_then(int_of)
        .filter(|p| *p != 0 && *p != root)
        .map(|p| Anchor::new(p.to_string()));
    // third-party apps get no name: fall back to the id rather than an empty name
    let name = text(v, "name").unwrap_or_else(|| id.to_string());
    let mut org = Org::new(id.to_string(), parent, name);
    org.order = v.get("order").and_then(int_of).and_then(order_from_wecom);
    if extra_attrs {
        if let Some(n) = text(v, "name_en") {
            org.attrs.insert("name_en".into(), Value::String(n));
        }
        if let Some(Value::Array(list)) = v.get("department_leader") {
            let leaders: Vec<Value> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect();
            if !leaders.is_empty() {
                org.attrs.insert("leaders".into(), Value::Array(leaders));
            }
        }
    }
    Ok(org)
}

/// Merges `user/list_id` rows (one per (user, department)) into one entry per user, in the
/// order users first appear, each with its departments in row order.
pub fn merge_dept_rows(rows: &[Value]) -> Result<Vec<(String, Vec<i64>)>> {
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let userid = text(row, "userid")
            .or_else(|| text(row, "open_userid"))
            .ok_or_else(|| Error::invalid_data(format!("user/list_id: row {i} has no userid")))?;
        let dept = row.get("department").and_then(int_of);
        let idx = *at.entry(userid.clone()).or_insert_with(|| {
            out.push((userid, Vec::new()));
            out.len() - 1
        });
        if let Some(d) = dept
            && !out[idx].1.contains(&d)
        {
            out[idx].1.push(d);
        }
    }
    Ok(out)
}

/// The department a user is listed under in the full listing: the main department when
/// known, else the first. A user in several departments has one `user/list_id` row per
/// department; the source emits the account from this department's row only, so that no
/// one is listed twice.
pub fn listing_department(v: &Value) -> Option<i64> {
    let depts = int_list(v, "department");
    match v.get("main_department").and_then(int_of) {
        Some(m) if depts.contains(&m) => Some(m),
        _ => depts.first().copied(),
    }
}

/// Checks a department name against WeCom's rules: 1–32 characters, none of `\:*?"<>|`
/// (nor the full-width `｜`).
pub fn check_dept_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 32 {
        return Err(Error::invalid_data(format!(
            "WeCom department name {name:?} must have 1 to 32 characters, it has {n}"
        )));
    }
    if let Some(c) = name.chars().find(|c| "\\:*?\"<>|｜".contains(*c)) {
        return Err(Error::invalid_data(format!(
            "WeCom department name {name:?} contains {c:?}, which WeCom refuses (\\:*?\"<>|)"
        )));
    }
    Ok(())
}

fn dept_ids(orgs: &[Anchor], root: i64) -> Result<Vec<i64>> {
    let mut out: Vec<i64> = Vec::with_capacity(orgs.len());
    for o in orgs {
        let d = o.as_str().parse::<i64>().map_err(|_| {
            Error::invalid_data(format!("org anchor {o:?} is not a WeCom department id"))
        })?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.is_empty() {
        out.push(root);
    }
    Ok(out)
}

/// The `user/create` body for an account (the anchor is the proposed `userid`; WeCom keeps
/// it). One of mobile or email is required.
pub fn user_create_body(a: &Account, map: &UserMapping) -> Result<Value> {
    let root = map.root;
    if a.phone.is_none() && a.email.is_none() {
        return Err(Error::invalid_data(format!(
            "account {}: WeCom needs a mobile or an email to create a member",
            a.anchor
        )));
    }
    let userid = if a.username.is_empty() {
        a.anchor.as_str()
    } else {
        a.username.as_str()
    };
    check_userid(userid)?;
    let depts = dept_ids(&a.orgs, root)?;
    let mut body = json!({
        "userid": userid,
        "name": a.display_name.clone().unwrap_or_else(|| userid.to_owned()),
        "department": depts,
        "main_department": depts[0],
        "to_invite": false,
    });
    let m = body
        .as_object_mut()
        .ok_or_else(|| Error::unexpected("user body"))?;
    if let Some(e) = &a.email {
        m.insert("email".into(), json!(e));
    }
    if let Some(p) = &a.phone {
        m.insert("mobile".into(), json!(p));
    }
    if let Some(t) = &a.title {
        m.insert("position".into(), json!(t));
    }
    if let Some(mgr) = &a.manager {
        m.insert("direct_leader".into(), json!([mgr.as_str()]));
    }
    if a.status == Status::Disabled {
        m.insert("enable".into(), json!(0));
    }
    match (&a.employee_id, &map.employee_id_attr) {
        (Some(id), Some(name)) => {
            m.insert("extattr".into(), extattr_body(name, id));
        }
        (Some(_), None) => {
            return Err(Error::unsupported(format!(
                "account {}: WeCom has no employee number field; set employee_id_attr to the custom attribute that holds it",
                a.anchor
            )));
        }
        _ => {}
    }
    for (k, v) in &a.attrs {
        if let Some(field) = writable_attr(k) {
            m.insert(field.into(), v.clone());
        }
    }
    Ok(body)
}

/// Attributes written as WeCom fields of the same name.
fn writable_attr(name: &str) -> Option<&'static str> {
    Some(match name {
        "alias" => "alias",
        "telephone" => "telephone",
        "address" => "address",
        "biz_mail" => "biz_mail",
        "external_position" => "external_position",
        _ => return None,
    })
}

/// Checks a userid: 1–64 bytes of `[A-Za-z0-9_\-@.]`, starting with a letter or digit.
pub fn check_userid(userid: &str) -> Result<()> {
    let ok = !userid.is_empty()
        && userid.len() <= 64
        && userid
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && userid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-@.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_data(format!(
            "{userid:?} is no WeCom userid (1-64 bytes of A-Z a-z 0-9 _ - @ ., starting with a letter or digit)"
        )))
    }
}

/// The `user/update` body for a patch of idsync field names.
pub fn user_update_body(userid: &str, changes: &Attrs, map: &UserMapping) -> Result<Value> {
    let root = map.root;
    let mut m = Map::new();
    m.insert("userid".into(), json!(userid));
    let str_or_empty = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
    for (field, value) in changes {
        match field.as_str() {
            "display_name" => {
                m.insert("name".into(), json!(value.as_str().unwrap_or(userid)));
            }
            "email" => {
                m.insert("email".into(), json!(str_or_empty(value)));
            }
            "phone" => {
                m.insert("mobile".into(), json!(str_or_empty(value)));
            }
            "title" => {
                m.insert("position".into(), json!(str_or_empty(value)));
            }
            "manager" => {
                let list: Vec<&str> = value.as_str().into_iter().collect();
                m.insert("direct_leader".into(), json!(list));
            }
            "orgs" => {
                let anchors: Vec<Anchor> = match value {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(Anchor::new)
                        .collect(),
                    Value::String(s) => vec![Anchor::new(s.clone())],
                    _ => Vec::new(),
                };
                let depts = dept_ids(&anchors, root)?;
                m.insert("main_department".into(), json!(depts[0]));
                m.insert("department".into(), json!(depts));
            }
            "status" => {
                let active =
                    !matches!(value.as_str(), Some(s) if s.eq_ignore_ascii_case("disabled"));
                m.insert("enable".into(), json!(i32::from(active)));
            }
            "employee_id" => match &map.employee_id_attr {
                Some(name) => {
                    m.insert("extattr".into(), extattr_body(name, &str_or_empty(value)));
                }
                None => {
                    return Err(Error::unsupported(format!(
                        "account {userid}: WeCom has no employee number field; set employee_id_attr to the custom attribute that holds it"
                    )));
                }
            },
            "username" => {
                return Err(Error::unsupported(format!(
                    "account {userid}: WeCom changes a userid only once and only for system-generated ones; it is the anchor here"
                )));
            }
            other => match other.strip_prefix("attrs.").and_then(writable_attr) {
                Some(f) => {
                    m.insert(f.into(), json!(str_or_empty(value)));
                }
                None => {
                    return Err(Error::unsupported(format!(
                        "account {userid}: field {other} cannot be written to WeCom"
                    )));
                }
            },
        }
    }
    Ok(Value::Object(m))
}

/// The `department/create` body.
pub fn dept_create_body(o: &Org, parent: i64) -> Result<Value> {
    check_dept_name(&o.name)?;
    let mut body = json!({ "name": o.name, "parentid": parent });
    if o.order.is_some() {
        body["order"] = json!(order_to_wecom(o.order));
    }
    if let Some(Value::String(en)) = o.attrs.get("name_en") {
        body["name_en"] = json!(en);
    }
    Ok(body)
}

/// The `department/update` body for a patch of idsync org field names.
pub fn dept_update_body(id: i64, changes: &Attrs) -> Result<Value> {
    let mut body = json!({ "id": id });
    for (field, value) in changes {
        match field.as_str() {
            "name" => {
                let name = value.as_str().unwrap_or_default();
                check_dept_name(name)?;
                body["name"] = json!(name);
            }
            "order" => body["order"] = json!(order_to_wecom(value.as_i64())),
            "attrs.name_en" => body["name_en"] = json!(value.as_str().unwrap_or_default()),
            other => {
                return Err(Error::unsupported(format!(
                    "department {id}: field {other} cannot be written to WeCom"
                )));
            }
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `user/get`, shaped as the official example (doc 90196), with a second department
    /// as the main one and two direct leaders.
    const USER_GET: &str = r#"{
      "errcode": 0, "errmsg": "ok",
      "userid": "zhangsan", "name": "张三",
      "department": [1, 2], "order": [1, 2],
      "position": "后台工程师", "mobile": "13800000000", "gender": "1",
      "email": "zhangsan@gzdev.com", "biz_mail": "zhangsan@qyycs2.wecom.work",
      "is_leader_in_dept": [1, 0], "direct_leader": ["lisi", "wangwu"],
      "avatar": "http://wx.qlogo.cn/mmopen/ajNVdqHZLLA3WJ6DSZUfiakYe37PKnQhBIeOQBO4czqrnZDS79FH5Wm5m4X69TBicnHFlhiafvDwklOpZeXYQQ2icg/0",
      "thumb_avatar": "http://wx.qlogo.cn/mmopen/ajNVdqHZLLA3WJ6DSZUfiakYe37PKnQhBIeOQBO4czqrnZDS79FH5Wm5m4X69TBicnHFlhiafvDwklOpZeXYQQ2icg/100",
      "telephone": "020-123456", "alias": "jackzhang", "address": "广州市海珠区新港中路",
      "open_userid": "xxxxxx", "main_department": 2,
      "extattr": {"attrs": [{"type": 0, "name": "文本名称", "text": {"value": "文本"}}]},
      "status": 1,
      "qr_code": "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=xxx",
      "external_position": "产品经理",
      "external_profile": {"external_corp_name": "企业简称", "wechat_channels": {"nickname": "视频号名称", "status": 1}, "external_attr": []}
    }"#;

    /// What a self-built app created after 2022-06-20 gets: withheld fields empty or absent.
    const USER_GET_RESTRICTED: &str = r#"{
      "errcode": 0, "errmsg": "ok",
      "userid": "lisi", "name": "李四", "department": [3], "order": [0],
      "position": "", "mobile": "", "gender": "0", "email": "", "biz_mail": "",
      "avatar": "", "thumb_avatar": "", "qr_code": "", "address": "",
      "is_leader_in_dept": [0], "direct_leader": [], "main_department": 3, "status": 4
    }"#;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn golden_user_get() {
        let a = account_from_user(&v(USER_GET), &UserMapping::new(1)).unwrap();
        let mut want = Account::new("zhangsan", "zhangsan");
        want.display_name = Some("张三".into());
        want.email = Some("zhangsan@gzdev.com".into());
        want.phone = Some("13800000000".into());
        want.title = Some("后台工程师".into());
        // main_department 2 first; 1 is the root (the tenant), no org
        want.orgs = vec![Anchor::new("2")];
        want.manager = Some(Anchor::new("lisi"));
        want.status = Status::Active;
        let attrs = json!({
            "alias": "jackzhang",
            "telephone": "020-123456",
            "address": "广州市海珠区新港中路",
            "biz_mail": "zhangsan@qyycs2.wecom.work",
            "open_userid": "xxxxxx",
            "external_position": "产品经理",
            "gender": "male",
            "leader_in_depts": ["1"],
            "dept_order": {"1": MAX_ORDER - 1, "2": MAX_ORDER - 2},
            "direct_leaders": ["lisi", "wangwu"],
        });
        want.attrs = serde_json::from_value(attrs).unwrap();
        assert_eq!(a, want);
        // with another root, both departments are orgs, the main one first
        let b = account_from_user(
            &v(USER_GET),
            &UserMapping {
                root: 100,
                extra_attrs: false,
                employee_id_attr: Some("文本名称".into()),
            },
        )
        .unwrap();
        assert_eq!(b.orgs, vec![Anchor::new("2"), Anchor::new("1")]);
        assert!(b.attrs.is_empty());
        // the employee number from the configured custom attribute
        assert_eq!(b.employee_id.as_deref(), Some("文本"));
        assert_eq!(a.employee_id, None);
    }

    #[test]
    fn withheld_fields_are_absent_not_empty() {
        let a = account_from_user(&v(USER_GET_RESTRICTED), &UserMapping::new(1)).unwrap();
        assert_eq!(a.email, None);
        assert_eq!(a.phone, None);
        assert_eq!(a.title, None);
        assert_eq!(a.manager, None);
        assert_eq!(a.orgs, vec![Anchor::new("3")]);
        // status 4 (not activated yet) is an enabled member
        assert_eq!(a.status, Status::Active);
        assert_eq!(
            a.attrs,
            serde_json::from_value::<Attrs>(json!({"wecom_status": "not_activated"})).unwrap()
        );
    }

    #[test]
    fn status_table() {
        for (status, want, detail) in [
            (1, Status::Active, None),
            (2, Status::Disabled, None),
            (4, Status::Active, Some("not_activated")),
            (5, Status::Disabled, Some("left")),
        ] {
            let mut u = v(USER_GET);
            u["status"] = json!(status);
            let a = account_from_user(&u, &UserMapping::new(1)).unwrap();
            assert_eq!(a.status, want, "{status}");
            assert_eq!(
                a.attrs.get("wecom_status").and_then(Value::as_str),
                detail,
                "{status}"
            );
        }
        assert!(account_from_user(&json!({"name": "x"}), &UserMapping::new(1)).is_err());
    }

    #[test]
    fn golden_department_get_and_order() {
        let d = v(r#"{"errcode": 0, "errmsg": "ok", "department": {
            "id": 2, "name": "广州研发中心", "name_en": "RDGZ",
            "department_leader": ["zhangsan", "lisi"], "parentid": 1, "order": 10}}"#);
        let o = org_from_department(&d["department"], 1, true).unwrap();
        let mut want = Org::new("2", None, "广州研发中心");
        want.order = Some(MAX_ORDER - 10);
        want.attrs =
            serde_json::from_value(json!({"name_en": "RDGZ", "leaders": ["zhangsan", "lisi"]}))
                .unwrap();
        assert_eq!(o, want);
        let child = org_from_department(
            &json!({"id": 3, "name": "a", "parentid": 2, "order": 0}),
            1,
            false,
        )
        .unwrap();
        assert_eq!(child.parent, Some(Anchor::new("2")));
        assert_eq!(child.order, None);
        // bigger first in WeCom = smaller first in idsync
        let (hi, lo) = (order_from_wecom(100_000_000), order_from_wecom(99_999_000));
        assert!(hi < lo);
        for o in [1, 10, 100_000_000, MAX_ORDER] {
            assert_eq!(order_to_wecom(order_from_wecom(o)), o);
        }
        assert_eq!(order_to_wecom(None), 0);
        assert_eq!(order_to_wecom(Some(-5)), MAX_ORDER);
    }

    #[test]
    fn list_id_rows_are_merged_per_user() {
        let page = v(
            r#"{"errcode": 0, "errmsg": "ok", "next_cursor": "aaaaaaaaa", "dept_user": [
            {"userid": "zhangsan", "department": 1},
            {"userid": "zhangsan", "department": 2},
            {"userid": "lisi", "department": 2},
            {"userid": "zhangsan", "department": 2}]}"#,
        );
        let rows = page["dept_user"].as_array().unwrap();
        assert_eq!(
            merge_dept_rows(rows).unwrap(),
            vec![("zhangsan".into(), vec![1, 2]), ("lisi".into(), vec![2])]
        );
        assert!(merge_dept_rows(&[json!({"department": 1})]).is_err());
        assert_eq!(listing_department(&v(USER_GET)), Some(2));
        assert_eq!(listing_department(&json!({"department": [5, 6]})), Some(5));
        assert_eq!(listing_department(&json!({})), None);
    }

    #[test]
    fn write_bodies_follow_the_contract() {
        let mut a = Account::new("wangwu", "wangwu");
        a.display_name = Some("王五".into());
        a.email = Some("wangwu@example.com".into());
        a.orgs = vec![Anchor::new("3"), Anchor::new("2")];
        a.manager = Some(Anchor::new("zhangsan"));
        a.status = Status::Disabled;
        let b = user_create_body(&a, &UserMapping::new(1)).unwrap();
        assert_eq!(
            b,
            json!({"userid": "wangwu", "name": "王五", "department": [3, 2], "main_department": 3,
                   "to_invite": false, "email": "wangwu@example.com",
                   "direct_leader": ["zhangsan"], "enable": 0})
        );
        a.email = None;
        let e = user_create_body(&a, &UserMapping::new(1)).unwrap_err();
        assert!(e.message().contains("mobile or an email"), "{e}");
        a.email = Some("wangwu@example.com".into());
        a.employee_id = Some("E001".into());
        assert!(user_create_body(&a, &UserMapping::new(1)).is_err());
        let with_attr = UserMapping {
            employee_id_attr: Some("工号".into()),
            ..UserMapping::new(1)
        };
        let b = user_create_body(&a, &with_attr).unwrap();
        assert_eq!(
            b["extattr"],
            json!({"attrs": [{"type": 0, "name": "工号", "text": {"value": "E001"}}]})
        );
        assert!(check_userid("_bad").is_err());
        assert!(check_userid("good.user-1@x").is_ok());

        let patch: Attrs = serde_json::from_value(json!({
            "status": "disabled", "orgs": [], "phone": null, "attrs.alias": "ww"
        }))
        .unwrap();
        assert_eq!(
            user_update_body("wangwu", &patch, &UserMapping::new(1)).unwrap(),
            json!({"userid": "wangwu", "enable": 0, "department": [1], "main_department": 1,
                   "mobile": "", "alias": "ww"})
        );
        let bad: Attrs = serde_json::from_value(json!({"attrs.unknown": 1})).unwrap();
        assert!(user_update_body("wangwu", &bad, &UserMapping::new(1)).is_err());

        let mut o = Org::new("x", None, "研发");
        o.order = Some(MAX_ORDER - 7);
        assert_eq!(
            dept_create_body(&o, 1).unwrap(),
            json!({"name": "研发", "parentid": 1, "order": 7})
        );
        for bad in ["", "a:b", "a|b", "a｜b", &"长".repeat(33)] {
            assert!(
                dept_create_body(&Org::new("x", None, bad), 1).is_err(),
                "{bad:?}"
            );
        }
        let p: Attrs = serde_json::from_value(json!({"name": "新名", "order": null})).unwrap();
        assert_eq!(
            dept_update_body(4, &p).unwrap(),
            json!({"id": 4, "name": "新名", "order": 0})
        );
    }
}
