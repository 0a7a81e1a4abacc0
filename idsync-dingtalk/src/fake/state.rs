//! The fake tenant's data: departments, users, and the directory API calls over them.
//!
//! Each handler takes the decoded JSON body and returns either the `result` value (or
//! `None` for answers without one) or an `(errcode, errmsg)` pair, with the codes and
//! shapes of the legacy API notes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use idsync_http::int_of;

/// One department of the fake tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeDept {
    /// `dept_id` (the root is 1).
    pub dept_id: i64,
    /// `name`.
    pub name: String,
    /// `parent_id`; `None` for the root.
    pub parent_id: Option<i64>,
    /// `order` among siblings (smaller first).
    pub order: i64,
    /// `dept_manager_userid_list`: the department's leaders.
    pub manager_userids: Vec<String>,
    /// `source_identifier`.
    pub source_identifier: Option<String>,
    /// `create_dept_group`.
    pub create_dept_group: bool,
    /// `auto_add_user`.
    pub auto_add_user: bool,
}

impl FakeDept {
    /// A department with defaults.
    pub fn new(dept_id: i64, parent_id: Option<i64>, name: impl Into<String>) -> Self {
        FakeDept {
            dept_id,
            name: name.into(),
            parent_id,
            order: 0,
            manager_userids: Vec::new(),
            source_identifier: None,
            create_dept_group: false,
            auto_add_user: false,
        }
    }
}

/// One user of the fake tenant. Optional personal fields are `None` when unset; the fake
/// then leaves them out of its answers, as DingTalk does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FakeUser {
    /// `userid`.
    pub userid: String,
    /// `unionid`.
    pub unionid: String,
    /// `name`.
    pub name: String,
    /// `mobile` (required at creation, unique).
    pub mobile: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `org_email`.
    pub org_email: Option<String>,
    /// `job_number`.
    pub job_number: Option<String>,
    /// `title`.
    pub title: Option<String>,
    /// `telephone`.
    pub telephone: Option<String>,
    /// `work_place`.
    pub work_place: Option<String>,
    /// `remark`.
    pub remark: Option<String>,
    /// `extension` (a JSON-encoded string).
    pub extension: Option<String>,
    /// `hired_date` (ms).
    pub hired_date: Option<i64>,
    /// `manager_userid`.
    pub manager_userid: Option<String>,
    /// `dept_id_list`.
    pub dept_id_list: Vec<i64>,
    /// `dept_order_list`: order per department (missing = 0).
    pub dept_orders: BTreeMap<i64, i64>,
    /// `exclusive_account`: an exclusive (专属) account, created without a mobile.
    pub exclusive_account: bool,
    /// `login_id` of an exclusive account.
    pub login_id: Option<String>,
    /// `active`: has activated DingTalk.
    pub active: bool,
    /// `admin`.
    pub admin: bool,
    /// `boss`.
    pub boss: bool,
    /// Creation sequence (the "custom" order's tie breaker).
    pub seq: u64,
}

/// An API failure: `(errcode, sub_code, message)`.
pub(crate) type ApiErr = (i64, Option<String>, String);

fn err(code: i64, msg: &str) -> ApiErr {
    (code, None, msg.to_owned())
}

type Answer = Result<Option<Value>, ApiErr>;

/// All departments and users.
#[derive(Debug, Clone, Default)]
pub(crate) struct Directory {
    pub(crate) depts: BTreeMap<i64, FakeDept>,
    pub(crate) users: BTreeMap<String, FakeUser>,
    pub(crate) next_dept_id: i64,
    pub(crate) next_seq: u64,
    pub(crate) new_users_active: bool,
}

fn str_field(body: &Value, key: &str) -> Option<String> {
    match body.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn bool_field(body: &Value, key: &str) -> Option<bool> {
    match body.get(key) {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

fn req_int(body: &Value, key: &str) -> Result<i64, ApiErr> {
    body.get(key)
        .and_then(int_of)
        .ok_or_else(|| err(400002, &format!("无效的参数: {key}")))
}

/// The `dept_id_list` quirk: a comma-separated string, never an array.
fn comma_ids(body: &Value, key: &str) -> Result<Option<Vec<i64>>, ApiErr> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let mut ids = Vec::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                ids.push(
                    part.parse::<i64>()
                        .map_err(|_| err(40035, &format!("参数非法: {key}")))?,
                );
            }
            if ids.len() > 100 {
                return Err(err(
                    40035,
                    &format!("参数非法: {key} has more than 100 ids"),
                ));
            }
            Ok(Some(ids))
        }
        Some(_) => Err(err(
            40035,
            &format!("参数非法: {key} must be a comma-separated string"),
        )),
    }
}

fn comma_strings(body: &Value, key: &str) -> Result<Option<Vec<String>>, ApiErr> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Some(_) => Err(err(
            40035,
            &format!("参数非法: {key} must be a comma-separated string"),
        )),
    }
}

fn force_fields(body: &Value) -> BTreeSet<String> {
    str_field(body, "force_update_fields")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn valid_dept_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=64).contains(&n) && !name.contains(['-', ',', '，'])
}

fn put_opt(obj: &mut serde_json::Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        obj.insert(key.to_owned(), Value::String(s.clone()));
    }
}

impl Directory {
    pub(crate) fn new(new_users_active: bool) -> Self {
        let mut d = Directory {
            next_dept_id: 100,
            new_users_active,
            ..Directory::default()
        };
        d.depts.insert(1, FakeDept::new(1, None, "Root"));
        d
    }

    pub(crate) fn members(&self, dept_id: i64) -> Vec<&FakeUser> {
        let mut v: Vec<&FakeUser> = self
            .users
            .values()
            .filter(|u| u.dept_id_list.contains(&dept_id))
            .collect();
        v.sort_by_key(|u| (u.dept_orders.get(&dept_id).copied().unwrap_or(0), u.seq));
        v
    }

    fn children(&self, dept_id: i64) -> Vec<&FakeDept> {
        let mut v: Vec<&FakeDept> = self
            .depts
            .values()
            .filter(|d| d.parent_id == Some(dept_id))
            .collect();
        v.sort_by_key(|d| (d.order, d.dept_id));
        v
    }

    fn is_leader(&self, userid: &str, dept_id: i64) -> bool {
        self.depts
            .get(&dept_id)
            .is_some_and(|d| d.manager_userids.iter().any(|m| m == userid))
    }

    fn user_base(&self, u: &FakeUser) -> serde_json::Map<String, Value> {
        let mut o = serde_json::Map::new();
        o.insert("userid".into(), json!(u.userid));
        o.insert("unionid".into(), json!(u.unionid));
        o.insert("name".into(), json!(u.name));
        o.insert("avatar".into(), json!(""));
        o.insert("state_code".into(), json!("86"));
        put_opt(&mut o, "mobile", &u.mobile);
        o.insert("hide_mobile".into(), json!(false));
        put_opt(&mut o, "telephone", &u.telephone);
        put_opt(&mut o, "job_number", &u.job_number);
        put_opt(&mut o, "title", &u.title);
        put_opt(&mut o, "email", &u.email);
        put_opt(&mut o, "org_email", &u.org_email);
        put_opt(&mut o, "work_place", &u.work_place);
        put_opt(&mut o, "remark", &u.remark);
        put_opt(&mut o, "extension", &u.extension);
        if let Some(h) = u.hired_date {
            o.insert("hired_date".into(), json!(h));
        }
        o.insert("dept_id_list".into(), json!(u.dept_id_list));
        o.insert("active".into(), json!(u.active));
        o.insert("admin".into(), json!(u.admin));
        o.insert("boss".into(), json!(u.boss));
        o.insert("exclusive_account".into(), json!(u.exclusive_account));
        o
    }

    fn list_item(&self, u: &FakeUser, dept_id: i64) -> Value {
        let mut o = self.user_base(u);
        o.insert(
            "dept_order".into(),
            json!(u.dept_orders.get(&dept_id).copied().unwrap_or(0)),
        );
        o.insert("leader".into(), json!(self.is_leader(&u.userid, dept_id)));
        Value::Object(o)
    }

    fn user_detail(&self, u: &FakeUser) -> Value {
        let mut o = self.user_base(u);
        put_opt(&mut o, "manager_userid", &u.manager_userid);
        o.insert(
            "dept_order_list".into(),
            Value::Array(
                u.dept_id_list
                    .iter()
                    .map(|d| json!({"dept_id": d, "order": u.dept_orders.get(d).copied().unwrap_or(0)}))
                    .collect(),
            ),
        );
        o.insert(
            "leader_in_dept".into(),
            Value::Array(
                u.dept_id_list
                    .iter()
                    .map(|d| json!({"dept_id": d, "leader": self.is_leader(&u.userid, *d)}))
                    .collect(),
            ),
        );
        o.insert("real_authed".into(), json!(true));
        o.insert("senior".into(), json!(false));
        o.insert("role_list".into(), json!([]));
        o.insert("union_emp_ext".into(), json!({}));
        Value::Object(o)
    }

    fn dept_detail(&self, d: &FakeDept) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("dept_id".into(), json!(d.dept_id));
        o.insert("name".into(), json!(d.name));
        if let Some(p) = d.parent_id {
            o.insert("parent_id".into(), json!(p));
        }
        put_opt(&mut o, "source_identifier", &d.source_identifier);
        o.insert("create_dept_group".into(), json!(d.create_dept_group));
        o.insert("auto_add_user".into(), json!(d.auto_add_user));
        o.insert("auto_approve_apply".into(), json!(false));
        o.insert("from_union_org".into(), json!(false));
        o.insert("order".into(), json!(d.order));
        o.insert("group_contain_sub_dept".into(), json!(false));
        o.insert("dept_manager_userid_list".into(), json!(d.manager_userids));
        o.insert("outer_dept".into(), json!(false));
        o.insert("outer_permit_depts".into(), json!([]));
        o.insert("outer_permit_users".into(), json!([]));
        o.insert("hide_dept".into(), json!(false));
        o.insert("user_permits".into(), json!([]));
        o.insert("dept_permits".into(), json!([]));
        o.insert(
            "member_count".into(),
            json!(self.subtree_member_count(d.dept_id)),
        );
        o.insert(
            "owning_member_count".into(),
            json!(self.members(d.dept_id).len()),
        );
        Value::Object(o)
    }

    fn subtree_member_count(&self, dept_id: i64) -> usize {
        let mut ids = BTreeSet::new();
        let mut queue = vec![dept_id];
        while let Some(d) = queue.pop() {
            if ids.insert(d) {
                queue.extend(self.children(d).iter().map(|c| c.dept_id));
            }
        }
        self.users
            .values()
            .filter(|u| u.dept_id_list.iter().any(|d| ids.contains(d)))
            .count()
    }

    fn dept_exists(&self, id: i64) -> Result<(), ApiErr> {
        if self.depts.contains_key(&id) {
            Ok(())
        } else {
            Err(err(60003, "未找到对应部门"))
        }
    }

    /// Dispatches one `topapi` call.
    pub(crate) fn call(&mut self, path: &str, body: &Value) -> Answer {
        match path {
            "/topapi/v2/department/listsub" => self.dept_listsub(body),
            "/topapi/v2/department/listsubid" => self.dept_listsubid(body),
            "/topapi/v2/department/get" => self.dept_get(body),
            "/topapi/v2/department/create" => self.dept_create(body),
            "/topapi/v2/department/update" => self.dept_update(body),
            "/topapi/v2/department/delete" => self.dept_delete(body),
            "/topapi/v2/user/list" => self.user_list(body),
            "/topapi/user/listid" => self.user_listid(body),
            "/topapi/v2/user/get" => self.user_get(body),
            "/topapi/v2/user/create" => self.user_create(body),
            "/topapi/v2/user/update" => self.user_update(body),
            "/topapi/v2/user/delete" => self.user_delete(body),
            _ => Err(err(22, "接口不存在")),
        }
    }

    fn dept_listsub(&self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        self.dept_exists(id)?;
        let list: Vec<Value> = self
            .children(id)
            .into_iter()
            .map(|d| {
                json!({"dept_id": d.dept_id, "name": d.name, "parent_id": id,
                       "create_dept_group": d.create_dept_group, "auto_add_user": d.auto_add_user})
            })
            .collect();
        Ok(Some(Value::Array(list)))
    }

    fn dept_listsubid(&self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        self.dept_exists(id)?;
        let ids: Vec<i64> = self.children(id).iter().map(|d| d.dept_id).collect();
        Ok(Some(json!({ "dept_id_list": ids })))
    }

    fn dept_get(&self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        let d = self
            .depts
            .get(&id)
            .ok_or_else(|| err(60003, "未找到对应部门"))?;
        Ok(Some(self.dept_detail(d)))
    }

    fn sibling_name_taken(&self, parent: i64, name: &str, except: Option<i64>) -> bool {
        self.depts
            .values()
            .any(|d| d.parent_id == Some(parent) && d.name == name && Some(d.dept_id) != except)
    }

    fn dept_create(&mut self, body: &Value) -> Answer {
        let name = str_field(body, "name").ok_or_else(|| err(400002, "无效的参数: name"))?;
        if !valid_dept_name(&name) {
            return Err(err(40035, "参数非法: name"));
        }
        let parent = req_int(body, "parent_id")?;
        self.dept_exists(parent)?;
        if self.sibling_name_taken(parent, &name, None) {
            return Err(err(60008, "父部门下该部门名称已存在"));
        }
        let id = self.next_dept_id;
        self.next_dept_id += 1;
        let mut d = FakeDept::new(id, Some(parent), name);
        d.order = body.get("order").and_then(int_of).unwrap_or(0);
        d.source_identifier = str_field(body, "source_identifier");
        d.create_dept_group = bool_field(body, "create_dept_group").unwrap_or(false);
        self.depts.insert(id, d);
        Ok(Some(json!({ "dept_id": id })))
    }

    fn dept_update(&mut self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        self.dept_exists(id)?;
        let mut d = self
            .depts
            .get(&id)
            .cloned()
            .ok_or_else(|| err(60003, "未找到对应部门"))?;
        if let Some(parent) = body.get("parent_id").and_then(int_of) {
            if id == 1 {
                return Err(err(40035, "参数非法: the root cannot move"));
            }
            self.dept_exists(parent)?;
            // no cycles: the new parent must not be the department or one of its descendants
            let mut cur = Some(parent);
            while let Some(c) = cur {
                if c == id {
                    return Err(err(40035, "参数非法: parent_id is a descendant"));
                }
                cur = self.depts.get(&c).and_then(|x| x.parent_id);
            }
            d.parent_id = Some(parent);
        }
        if let Some(name) = str_field(body, "name") {
            if !valid_dept_name(&name) {
                return Err(err(40035, "参数非法: name"));
            }
            d.name = name;
        }
        if let Some(p) = d.parent_id {
            if self.sibling_name_taken(p, &d.name, Some(id)) {
                return Err(err(60008, "父部门下该部门名称已存在"));
            }
        }
        if let Some(o) = body.get("order").and_then(int_of) {
            d.order = o;
        }
        if let Some(s) = str_field(body, "source_identifier") {
            d.source_identifier = Some(s);
        }
        if let Some(m) = comma_strings(body, "dept_manager_userid_list")? {
            if let Some(bad) = m.iter().find(|u| !self.users.contains_key(*u)) {
                return Err(err(60121, &format!("找不到该用户: {bad}")));
            }
            d.manager_userids = m;
        }
        for f in force_fields(body) {
            match f.as_str() {
                "dept_manager_userid_list" => d.manager_userids.clear(),
                "source_identifier" => d.source_identifier = None,
                _ => {}
            }
        }
        self.depts.insert(id, d);
        Ok(None)
    }

    fn dept_delete(&mut self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        self.dept_exists(id)?;
        if id == 1 {
            return Err(err(40035, "参数非法: the root cannot be deleted"));
        }
        if !self.children(id).is_empty() {
            return Err(err(60006, "部门中存在子部门，不允许删除"));
        }
        if !self.members(id).is_empty() {
            return Err(err(60005, "部门中存在员工，不允许删除"));
        }
        self.depts.remove(&id);
        Ok(None)
    }

    fn user_list(&self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        let cursor = req_int(body, "cursor")?;
        let size = req_int(body, "size")?;
        if !(1..=100).contains(&size) || cursor < 0 {
            return Err(err(400002, "无效的参数: size/cursor"));
        }
        self.dept_exists(id)?;
        let members = self.members(id);
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(members.len());
        let end = start
            .saturating_add(usize::try_from(size).unwrap_or(100))
            .min(members.len());
        let list: Vec<Value> = members[start..end]
            .iter()
            .map(|u| self.list_item(u, id))
            .collect();
        let has_more = end < members.len();
        let mut result = json!({ "has_more": has_more, "list": list });
        if has_more {
            result["next_cursor"] = json!(end);
        }
        Ok(Some(result))
    }

    fn user_listid(&self, body: &Value) -> Answer {
        let id = req_int(body, "dept_id")?;
        self.dept_exists(id)?;
        let ids: Vec<&str> = self.members(id).iter().map(|u| u.userid.as_str()).collect();
        Ok(Some(json!({ "userid_list": ids })))
    }

    fn user_get(&self, body: &Value) -> Answer {
        let id = str_field(body, "userid").ok_or_else(|| err(33012, "无效的USERID"))?;
        let u = self
            .users
            .get(&id)
            .ok_or_else(|| err(60121, "找不到该用户"))?;
        Ok(Some(self.user_detail(u)))
    }

    /// Applies the writable user fields of a create/update body.
    fn apply_user_fields(
        &self,
        u: &mut FakeUser,
        body: &Value,
        creating: bool,
    ) -> Result<(), ApiErr> {
        if let Some(name) = str_field(body, "name") {
            if name.is_empty() || name.chars().count() > 80 {
                return Err(err(40035, "参数非法: name"));
            }
            u.name = name;
        }
        if let Some(m) = str_field(body, "mobile") {
            if self
                .users
                .values()
                .any(|o| o.userid != u.userid && o.mobile.as_deref() == Some(m.as_str()))
            {
                return Err(err(60104, "手机号码在公司中已存在"));
            }
            u.mobile = Some(m);
        }
        let texts: [(&str, &mut Option<String>); 8] = [
            ("email", &mut u.email),
            ("org_email", &mut u.org_email),
            ("job_number", &mut u.job_number),
            ("title", &mut u.title),
            ("telephone", &mut u.telephone),
            ("work_place", &mut u.work_place),
            ("remark", &mut u.remark),
            ("manager_userid", &mut u.manager_userid),
        ];
        for (k, slot) in texts {
            if let Some(v) = str_field(body, k) {
                *slot = Some(v);
            }
        }
        if let Some(m) = &u.manager_userid {
            if !self.users.contains_key(m) && *m != u.userid {
                return Err(err(60121, "找不到该用户: manager_userid"));
            }
        }
        match body.get("extension") {
            Some(Value::String(s)) => u.extension = Some(s.clone()),
            Some(v @ Value::Object(_)) => u.extension = Some(v.to_string()),
            _ => {}
        }
        if let Some(h) = body.get("hired_date").and_then(int_of) {
            u.hired_date = Some(h);
        }
        if let Some(ids) = comma_ids(body, "dept_id_list")? {
            if ids.is_empty() {
                return Err(err(40035, "参数非法: dept_id_list"));
            }
            for d in &ids {
                self.dept_exists(*d)?;
            }
            u.dept_orders.retain(|d, _| ids.contains(d));
            u.dept_id_list = ids;
        } else if creating {
            return Err(err(400002, "无效的参数: dept_id_list"));
        }
        if let Some(Value::Array(list)) = body.get("dept_order_list") {
            for item in list {
                if let (Some(d), Some(o)) = (
                    item.get("dept_id").and_then(int_of),
                    item.get("order").and_then(int_of),
                ) {
                    u.dept_orders.insert(d, o);
                }
            }
        }
        for f in force_fields(body) {
            match f.as_str() {
                "email" => u.email = None,
                "org_email" => u.org_email = None,
                "job_number" => u.job_number = None,
                "title" => u.title = None,
                "telephone" => u.telephone = None,
                "work_place" => u.work_place = None,
                "remark" => u.remark = None,
                "manager_userid" => u.manager_userid = None,
                "extension" => u.extension = None,
                "hired_date" => u.hired_date = None,
                _ => {}
            }
        }
        Ok(())
    }

    fn user_create(&mut self, body: &Value) -> Answer {
        if str_field(body, "name").is_none() {
            return Err(err(400002, "无效的参数: name"));
        }
        let exclusive = bool_field(body, "exclusive_account").unwrap_or(false);
        if exclusive {
            if str_field(body, "login_id").is_none() {
                return Err(err(400002, "无效的参数: login_id"));
            }
        } else if str_field(body, "mobile").is_none() {
            return Err(err(400002, "无效的参数: mobile"));
        }
        let seq = self.next_seq;
        let userid = match str_field(body, "userid") {
            Some(id) if id.is_empty() || id.chars().count() > 64 => {
                return Err(err(33012, "无效的USERID"));
            }
            Some(id) => {
                if self.users.contains_key(&id) {
                    return Err(err(60102, "UserID在公司中已存在"));
                }
                id
            }
            None => format!("01{:017}", 3_250_846_551_234_567u64.wrapping_add(seq)),
        };
        let mut u = FakeUser {
            userid: userid.clone(),
            unionid: format!("union{seq:08}"),
            active: self.new_users_active,
            exclusive_account: exclusive,
            login_id: str_field(body, "login_id"),
            seq,
            ..FakeUser::default()
        };
        self.apply_user_fields(&mut u, body, true)?;
        self.next_seq += 1;
        let unionid = u.unionid.clone();
        self.users.insert(userid.clone(), u);
        Ok(Some(json!({ "userid": userid, "unionId": unionid })))
    }

    fn user_update(&mut self, body: &Value) -> Answer {
        let id = str_field(body, "userid").ok_or_else(|| err(33012, "无效的USERID"))?;
        let mut u = self
            .users
            .get(&id)
            .cloned()
            .ok_or_else(|| err(60121, "找不到该用户"))?;
        self.apply_user_fields(&mut u, body, false)?;
        self.users.insert(id, u);
        Ok(None)
    }

    fn user_delete(&mut self, body: &Value) -> Answer {
        let id = str_field(body, "userid").ok_or_else(|| err(33012, "无效的USERID"))?;
        if self.users.remove(&id).is_none() {
            return Err(err(60121, "找不到该用户"));
        }
        for d in self.depts.values_mut() {
            d.manager_userids.retain(|m| *m != id);
        }
        for u in self.users.values_mut() {
            if u.manager_userid.as_deref() == Some(id.as_str()) {
                u.manager_userid = None;
            }
        }
        Ok(None)
    }
}
