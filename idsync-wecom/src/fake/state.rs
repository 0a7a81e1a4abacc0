//! The fake corp's data: departments, members, and the directory API calls over them.
//!
//! [`State::call`] takes the API path (`user/get`), the query and the JSON body and returns
//! the JSON answer WeCom gives: `{"errcode": 0, "errmsg": "ok", ...}` or an error code of the
//! contract (60102, 60104, 60106, 60111, 60003, 60004, 60005, 60006, 60008, ...). Every
//! write queues the `change_contact` event WeCom would push (ids only).

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::ContactChange;
use crate::mapping::int_of;

/// One department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeDept {
    /// `id` (the root is 1).
    pub id: i64,
    /// `name`.
    pub name: String,
    /// `name_en`.
    pub name_en: Option<String>,
    /// `parentid` (0 for the root).
    pub parentid: i64,
    /// `order` (bigger first).
    pub order: i64,
    /// `department_leader`.
    pub department_leader: Vec<String>,
}

impl FakeDept {
    /// A department with order 0 and no leaders.
    pub fn new(id: i64, parentid: i64, name: impl Into<String>) -> Self {
        FakeDept {
            id,
            name: name.into(),
            name_en: None,
            parentid,
            order: 0,
            department_leader: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id, "name": self.name, "parentid": self.parentid,
            "order": self.order, "department_leader": self.department_leader,
        });
        if let Some(en) = &self.name_en {
            v["name_en"] = json!(en);
        }
        v
    }
}

/// One member. Unset personal fields are `None` and left out of answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FakeUser {
    /// `userid` (unique case-insensitively).
    pub userid: String,
    /// `name`.
    pub name: String,
    /// `department`.
    pub department: Vec<i64>,
    /// `order`, parallel to `department`.
    pub order: Vec<i64>,
    /// `is_leader_in_dept`, parallel to `department`.
    pub is_leader_in_dept: Vec<i64>,
    /// `main_department`.
    pub main_department: i64,
    /// `position`.
    pub position: Option<String>,
    /// `mobile` (unique).
    pub mobile: Option<String>,
    /// `email` (unique).
    pub email: Option<String>,
    /// `alias`.
    pub alias: Option<String>,
    /// `telephone`.
    pub telephone: Option<String>,
    /// `address`.
    pub address: Option<String>,
    /// `biz_mail`.
    pub biz_mail: Option<String>,
    /// `external_position`.
    pub external_position: Option<String>,
    /// `direct_leader` (≤ 5).
    pub direct_leader: Vec<String>,
    /// `status`: 1 active, 2 disabled, 4 not activated, 5 left.
    pub status: i64,
    /// `extattr` text attributes, by name.
    pub extattr: BTreeMap<String, String>,
}

impl FakeUser {
    /// An active member of the given departments (the first is the main one).
    pub fn new(userid: impl Into<String>, name: impl Into<String>, depts: &[i64]) -> Self {
        FakeUser {
            userid: userid.into(),
            name: name.into(),
            department: depts.to_vec(),
            order: vec![0; depts.len()],
            is_leader_in_dept: vec![0; depts.len()],
            main_department: depts.first().copied().unwrap_or(1),
            status: 1,
            ..FakeUser::default()
        }
    }

    fn to_json(&self, withhold: bool) -> Value {
        let mut v = json!({
            "userid": self.userid, "name": self.name,
            "department": self.department, "order": self.order,
            "is_leader_in_dept": self.is_leader_in_dept,
            "main_department": self.main_department,
            "direct_leader": self.direct_leader,
            "status": self.status,
        });
        let restricted = ["mobile", "email", "biz_mail", "address"];
        for (k, val) in [
            ("position", &self.position),
            ("mobile", &self.mobile),
            ("email", &self.email),
            ("alias", &self.alias),
            ("telephone", &self.telephone),
            ("address", &self.address),
            ("biz_mail", &self.biz_mail),
            ("external_position", &self.external_position),
        ] {
            if withhold && restricted.contains(&k) {
                // withheld from new self-built apps: present but empty
                v[k] = json!("");
            } else if let Some(s) = val {
                v[k] = json!(s);
            }
        }
        if !self.extattr.is_empty() {
            let attrs: Vec<Value> = self
                .extattr
                .iter()
                .map(|(n, t)| json!({"type": 0, "name": n, "text": {"value": t}}))
                .collect();
            v["extattr"] = json!({ "attrs": attrs });
        }
        if withhold {
            v["gender"] = json!("0");
            v["avatar"] = json!("");
        }
        v
    }
}

/// The fake corp's directory.
#[derive(Debug, Clone)]
pub struct State {
    /// Departments by id.
    pub depts: BTreeMap<i64, FakeDept>,
    /// Members by lower-cased userid.
    pub users: BTreeMap<String, FakeUser>,
    /// The next id `department/create` assigns.
    pub next_dept_id: i64,
    /// Withhold the personal fields new self-built apps no longer get (2022-06-20).
    pub withhold_fields: bool,
    /// Events not yet pushed.
    pub pending: Vec<ContactChange>,
}

impl Default for State {
    fn default() -> Self {
        let mut depts = BTreeMap::new();
        let mut root = FakeDept::new(1, 0, "Fake Corp");
        root.order = 100_000_000;
        depts.insert(1, root);
        State {
            depts,
            users: BTreeMap::new(),
            next_dept_id: 2,
            withhold_fields: false,
            pending: Vec::new(),
        }
    }
}

type Answer = std::result::Result<Value, (i64, String)>;

fn err(code: i64, msg: impl Into<String>) -> Answer {
    Err((code, msg.into()))
}

fn ok_with(mut v: Value, errmsg: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("errcode".into(), json!(0));
        m.insert("errmsg".into(), json!(errmsg));
    }
    v
}

fn s(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn ints(body: &Value, key: &str) -> Option<Vec<i64>> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(int_of).collect())
}

fn strs(body: &Value, key: &str) -> Option<Vec<String>> {
    body.get(key).and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

/// An empty string clears an optional field.
fn opt(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

impl State {
    /// Answers one API call the way WeCom does.
    pub fn call(&mut self, path: &str, query: &HashMap<String, String>, body: &Value) -> Value {
        let q = |k: &str| query.get(k).cloned().unwrap_or_default();
        let answer = match path {
            "department/list" => self.dept_list(&q("id"), false),
            "department/simplelist" => self.dept_list(&q("id"), true),
            "department/get" => self.dept_get(&q("id")),
            "department/create" => self.dept_create(body),
            "department/update" => self.dept_update(body),
            "department/delete" => self.dept_delete(&q("id")),
            "user/get" => self.user_get(&q("userid")),
            "user/list_id" => self.list_id(body),
            "user/create" => self.user_create(body),
            "user/update" => self.user_update(body),
            "user/delete" => self.user_delete(&q("userid")),
            "user/getuserid" => {
                self.userid_by(|u| u.mobile.as_deref() == s(body, "mobile").as_deref())
            }
            "user/get_userid_by_email" => {
                let want = s(body, "email").unwrap_or_default().to_lowercase();
                let biz = body.get("email_type").and_then(int_of) != Some(2);
                self.userid_by(|u| {
                    let have = if biz { &u.biz_mail } else { &u.email };
                    have.as_deref().is_some_and(|e| e.to_lowercase() == want)
                })
            }
            other => err(404, format!("invalid url {other}")),
        };
        match answer {
            Ok(v) => v,
            Err((code, msg)) => json!({"errcode": code, "errmsg": msg}),
        }
    }

    fn dept(&self, raw: &str) -> std::result::Result<&FakeDept, (i64, String)> {
        let id: i64 = raw
            .trim()
            .parse()
            .map_err(|_| (60123, format!("invalid party id {raw}")))?;
        self.depts
            .get(&id)
            .ok_or((60003, format!("department not found: {id}")))
    }

    fn descendants(&self, id: i64) -> Vec<i64> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(
                self.depts
                    .values()
                    .filter(|d| d.parentid == p && d.id != p)
                    .map(|d| d.id),
            );
            i += 1;
        }
        out
    }

    fn dept_list(&self, id: &str, simple: bool) -> Answer {
        let root = if id.is_empty() { 1 } else { self.dept(id)?.id };
        let items: Vec<Value> = self
            .descendants(root)
            .into_iter()
            .filter_map(|d| self.depts.get(&d))
            .map(|d| {
                if simple {
                    json!({"id": d.id, "parentid": d.parentid, "order": d.order})
                } else {
                    d.to_json()
                }
            })
            .collect();
        let key = if simple {
            "department_id"
        } else {
            "department"
        };
        Ok(ok_with(json!({ key: items }), "ok"))
    }

    fn dept_get(&self, id: &str) -> Answer {
        Ok(ok_with(
            json!({"department": self.dept(id)?.to_json()}),
            "ok",
        ))
    }

    fn check_name(name: &str) -> Result<(), (i64, String)> {
        let n = name.chars().count();
        if n == 0 || n > 32 || name.chars().any(|c| "\\:*?\"<>|｜".contains(c)) {
            return Err((60009, format!("department name invalid: {name}")));
        }
        Ok(())
    }

    fn sibling_named(&self, parent: i64, name: &str, except: i64) -> bool {
        self.depts
            .values()
            .any(|d| d.parentid == parent && d.id != except && d.name == name)
    }

    fn dept_create(&mut self, body: &Value) -> Answer {
        let name = s(body, "name").unwrap_or_default();
        Self::check_name(&name)?;
        let parent = body.get("parentid").and_then(int_of).unwrap_or(0);
        if !self.depts.contains_key(&parent) {
            return err(60004, format!("parent department not found: {parent}"));
        }
        if self.sibling_named(parent, &name, -1) {
            return err(60008, format!("department name exists: {name}"));
        }
        let id = match body.get("id").and_then(int_of) {
            Some(id) if id <= 1 => return err(60123, format!("invalid party id {id}")),
            Some(id) if self.depts.contains_key(&id) => {
                return err(60008, format!("department id exists: {id}"));
            }
            Some(id) => id,
            None => {
                while self.depts.contains_key(&self.next_dept_id) {
                    self.next_dept_id += 1;
                }
                self.next_dept_id
            }
        };
        let mut d = FakeDept::new(id, parent, name);
        d.order = body.get("order").and_then(int_of).unwrap_or(0);
        d.name_en = s(body, "name_en");
        self.depts.insert(id, d);
        self.pending.push(ContactChange::DeptCreated { id });
        Ok(json!({"errcode": 0, "errmsg": "created", "id": id}))
    }

    fn dept_update(&mut self, body: &Value) -> Answer {
        let id = body
            .get("id")
            .and_then(int_of)
            .ok_or((60123, "invalid party id".to_owned()))?;
        let current = self.dept(&id.to_string())?.clone();
        let name = s(body, "name").unwrap_or_else(|| current.name.clone());
        Self::check_name(&name)?;
        let parent = body
            .get("parentid")
            .and_then(int_of)
            .unwrap_or(current.parentid);
        if parent != current.parentid {
            if id == 1 || !self.depts.contains_key(&parent) {
                return err(60004, format!("parent department not found: {parent}"));
            }
            if self.descendants(id).contains(&parent) {
                return err(60004, format!("parent {parent} is inside department {id}"));
            }
        }
        if self.sibling_named(parent, &name, id) {
            return err(60008, format!("department name exists: {name}"));
        }
        let d = self
            .depts
            .get_mut(&id)
            .ok_or((60003, format!("department not found: {id}")))?;
        d.name = name;
        d.parentid = parent;
        if let Some(o) = body.get("order").and_then(int_of) {
            d.order = o;
        }
        if let Some(en) = s(body, "name_en") {
            d.name_en = opt(en);
        }
        self.pending.push(ContactChange::DeptUpdated { id });
        Ok(json!({"errcode": 0, "errmsg": "updated"}))
    }

    fn dept_delete(&mut self, raw: &str) -> Answer {
        let id = self.dept(raw)?.id;
        if id == 1 || self.depts.values().any(|d| d.parentid == id) {
            return err(60006, format!("department contains sub-department: {id}"));
        }
        if self.users.values().any(|u| u.department.contains(&id)) {
            return err(60005, format!("department contains user: {id}"));
        }
        self.depts.remove(&id);
        self.pending.push(ContactChange::DeptDeleted { id });
        Ok(json!({"errcode": 0, "errmsg": "deleted"}))
    }

    fn user(&self, userid: &str) -> std::result::Result<&FakeUser, (i64, String)> {
        self.users
            .get(&userid.to_lowercase())
            .ok_or((60111, format!("userid not found: {userid}")))
    }

    fn userid_by(&self, pred: impl Fn(&FakeUser) -> bool) -> Answer {
        match self.users.values().find(|u| pred(u)) {
            Some(u) => Ok(json!({"errcode": 0, "errmsg": "ok", "userid": u.userid})),
            None => err(46004, "user not exists"),
        }
    }

    fn user_get(&self, userid: &str) -> Answer {
        Ok(ok_with(
            self.user(userid)?.to_json(self.withhold_fields),
            "ok",
        ))
    }

    /// `user/list_id`: rows ordered by (department, userid); the cursor is the key of the
    /// last row served, so rows added or removed meanwhile never shift the listing.
    fn list_id(&self, body: &Value) -> Answer {
        let limit = body.get("limit").and_then(int_of).unwrap_or(10_000);
        if !(1..=10_000).contains(&limit) {
            return err(40058, format!("limit {limit} out of range 1..10000"));
        }
        let after: Option<(i64, String)> = match s(body, "cursor").filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let raw = URL_SAFE_NO_PAD
                    .decode(&c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|t| {
                        let (d, u) = t.split_once(':')?;
                        Some((d.parse().ok()?, u.to_owned()))
                    });
                match raw {
                    Some(k) => Some(k),
                    None => return err(40058, "invalid cursor"),
                }
            }
        };
        let mut rows: Vec<(i64, String, &str)> = self
            .users
            .iter()
            .flat_map(|(key, u)| {
                u.department
                    .iter()
                    .map(move |d| (*d, key.clone(), u.userid.as_str()))
            })
            .collect();
        rows.sort();
        let start = match &after {
            None => 0,
            Some(k) => rows.partition_point(|(d, key, _)| (d, key) <= (&k.0, &k.1)),
        };
        let n = usize::try_from(limit).unwrap_or(10_000);
        let page: Vec<&(i64, String, &str)> = rows.iter().skip(start).take(n).collect();
        let more = start + page.len() < rows.len();
        let next = match (more, page.last()) {
            (true, Some((d, key, _))) => URL_SAFE_NO_PAD.encode(format!("{d}:{key}")),
            _ => String::new(),
        };
        let items: Vec<Value> = page
            .iter()
            .map(|(d, _, userid)| json!({"userid": userid, "department": d}))
            .collect();
        Ok(json!({"errcode": 0, "errmsg": "ok", "next_cursor": next, "dept_user": items}))
    }

    fn check_unique(&self, u: &FakeUser, except: &str) -> Result<(), (i64, String)> {
        for other in self
            .users
            .values()
            .filter(|o| o.userid.to_lowercase() != except)
        {
            if u.mobile.is_some() && other.mobile == u.mobile {
                return Err((60104, format!("mobile existed:{}", other.userid)));
            }
            if u.email.is_some() && other.email == u.email {
                return Err((60106, format!("email existed:{}", other.userid)));
            }
        }
        Ok(())
    }

    fn check_depts(&self, u: &FakeUser) -> Result<(), (i64, String)> {
        if u.department.is_empty() || u.department.len() > 100 {
            return Err((60003, "department not found".to_owned()));
        }
        if let Some(d) = u.department.iter().find(|d| !self.depts.contains_key(d)) {
            return Err((60003, format!("department not found: {d}")));
        }
        if u.direct_leader.len() > 5 {
            return Err((40058, "direct_leader: at most 5".to_owned()));
        }
        Ok(())
    }

    fn apply_fields(u: &mut FakeUser, body: &Value) {
        if let Some(n) = s(body, "name") {
            u.name = n;
        }
        if let Some(d) = ints(body, "department") {
            let old: HashMap<i64, (i64, i64)> = u
                .department
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    (
                        *d,
                        (
                            u.order.get(i).copied().unwrap_or(0),
                            u.is_leader_in_dept.get(i).copied().unwrap_or(0),
                        ),
                    )
                })
                .collect();
            u.order = d.iter().map(|x| old.get(x).map_or(0, |o| o.0)).collect();
            u.is_leader_in_dept = d.iter().map(|x| old.get(x).map_or(0, |o| o.1)).collect();
            u.department = d;
            if !u.department.contains(&u.main_department) {
                u.main_department = u.department.first().copied().unwrap_or(1);
            }
        }
        if let Some(o) = ints(body, "order") {
            u.order = o;
        }
        if let Some(l) = ints(body, "is_leader_in_dept") {
            u.is_leader_in_dept = l;
        }
        if let Some(m) = body.get("main_department").and_then(int_of) {
            u.main_department = m;
        }
        for (key, field) in [
            ("position", &mut u.position),
            ("mobile", &mut u.mobile),
            ("email", &mut u.email),
            ("alias", &mut u.alias),
            ("telephone", &mut u.telephone),
            ("address", &mut u.address),
            ("biz_mail", &mut u.biz_mail),
            ("external_position", &mut u.external_position),
        ] {
            if let Some(v) = s(body, key) {
                *field = opt(v);
            }
        }
        if let Some(attrs) = body
            .get("extattr")
            .and_then(|e| e.get("attrs"))
            .and_then(Value::as_array)
        {
            for a in attrs {
                let name = s(a, "name").unwrap_or_default();
                let text = a
                    .get("text")
                    .and_then(|t| s(t, "value"))
                    .unwrap_or_default();
                if name.is_empty() {
                    continue;
                }
                if text.is_empty() {
                    u.extattr.remove(&name);
                } else {
                    u.extattr.insert(name, text);
                }
            }
        }
        if let Some(l) = strs(body, "direct_leader") {
            u.direct_leader = l;
        }
        match body.get("enable").and_then(int_of) {
            Some(0) => u.status = 2,
            Some(1) if u.status == 2 => u.status = 1,
            _ => {}
        }
    }

    fn user_create(&mut self, body: &Value) -> Answer {
        let userid = s(body, "userid").unwrap_or_default();
        let valid = !userid.is_empty()
            && userid.len() <= 64
            && userid.starts_with(|c: char| c.is_ascii_alphanumeric())
            && userid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-@.".contains(c));
        if !valid {
            return err(60112, format!("invalid userid: {userid}"));
        }
        let key = userid.to_lowercase();
        if self.users.contains_key(&key) {
            return err(60102, format!("userid existed:{userid}"));
        }
        let name = s(body, "name").unwrap_or_default();
        if name.is_empty() || name.chars().count() > 64 {
            return err(60112, "invalid name");
        }
        let mut u = FakeUser::new(userid.clone(), name, &[]);
        u.department.clear();
        // a member invited but not joined yet is "not activated"
        u.status = 4;
        Self::apply_fields(&mut u, body);
        if u.mobile.is_none() && u.email.is_none() {
            return err(60129, "mobile and email can not be both empty");
        }
        self.check_depts(&u)?;
        self.check_unique(&u, &key)?;
        self.users.insert(key, u);
        self.pending.push(ContactChange::UserCreated { userid });
        Ok(json!({"errcode": 0, "errmsg": "created"}))
    }

    fn user_update(&mut self, body: &Value) -> Answer {
        let userid = s(body, "userid").unwrap_or_default();
        let key = userid.to_lowercase();
        let mut u = self.user(&userid)?.clone();
        Self::apply_fields(&mut u, body);
        if u.mobile.is_none() && u.email.is_none() {
            return err(60129, "mobile and email can not be both empty");
        }
        self.check_depts(&u)?;
        self.check_unique(&u, &key)?;
        let new_userid = s(body, "new_userid").filter(|n| !n.is_empty() && *n != u.userid);
        if let Some(n) = &new_userid {
            if self.users.contains_key(&n.to_lowercase()) {
                return err(60102, format!("userid existed:{n}"));
            }
            self.users.remove(&key);
            u.userid = n.clone();
            // leaders naming the old id follow the rename
            for other in self.users.values_mut() {
                for l in &mut other.direct_leader {
                    if l.eq_ignore_ascii_case(&userid) {
                        l.clone_from(n);
                    }
                }
            }
            self.users.insert(n.to_lowercase(), u.clone());
        } else {
            self.users.insert(key, u.clone());
        }
        self.pending
            .push(ContactChange::UserUpdated { userid, new_userid });
        Ok(json!({"errcode": 0, "errmsg": "updated"}))
    }

    fn user_delete(&mut self, userid: &str) -> Answer {
        let u = self.user(userid)?.clone();
        self.users.remove(&u.userid.to_lowercase());
        self.pending
            .push(ContactChange::UserDeleted { userid: u.userid });
        Ok(json!({"errcode": 0, "errmsg": "deleted"}))
    }

    /// Adds a department under `parent` directly (no event) and returns its id.
    pub fn add_dept(&mut self, parent: i64, name: &str) -> i64 {
        while self.depts.contains_key(&self.next_dept_id) {
            self.next_dept_id += 1;
        }
        let id = self.next_dept_id;
        self.depts.insert(id, FakeDept::new(id, parent, name));
        id
    }

    /// Puts a member directly (no event).
    pub fn put_user(&mut self, user: FakeUser) {
        self.users.insert(user.userid.to_lowercase(), user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::needless_pass_by_value)]
    fn call(st: &mut State, path: &str, q: &[(&str, &str)], body: Value) -> Value {
        let q: HashMap<String, String> = q
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        st.call(path, &q, &body)
    }

    #[test]
    fn users_and_departments_with_contract_errors() {
        let mut st = State::default();
        let r = call(
            &mut st,
            "department/create",
            &[],
            json!({"name": "研发", "parentid": 1, "order": 5}),
        );
        assert_eq!(r["errmsg"], "created");
        let dev = r["id"].as_i64().unwrap();
        assert_eq!(
            call(
                &mut st,
                "department/create",
                &[],
                json!({"name": "研发", "parentid": 1})
            )["errcode"],
            60008
        );
        assert_eq!(
            call(
                &mut st,
                "department/create",
                &[],
                json!({"name": "a:b", "parentid": 1})
            )["errcode"],
            60009
        );
        assert_eq!(
            call(
                &mut st,
                "department/create",
                &[],
                json!({"name": "x", "parentid": 99})
            )["errcode"],
            60004
        );

        let r = call(
            &mut st,
            "user/create",
            &[],
            json!({"userid": "ZhangSan", "name": "张三", "department": [dev], "mobile": "138"}),
        );
        assert_eq!(r["errmsg"], "created", "{r}");
        assert_eq!(
            call(
                &mut st,
                "user/create",
                &[],
                json!({"userid": "zhangsan", "name": "x", "department": [1], "email": "a@b"})
            )["errcode"],
            60102
        );
        assert_eq!(
            call(
                &mut st,
                "user/create",
                &[],
                json!({"userid": "lisi", "name": "x", "department": [1], "mobile": "138"})
            )["errcode"],
            60104
        );
        assert_eq!(
            call(
                &mut st,
                "user/create",
                &[],
                json!({"userid": "lisi", "name": "x", "department": [1]})
            )["errcode"],
            60129
        );
        assert_eq!(
            call(
                &mut st,
                "user/create",
                &[],
                json!({"userid": "lisi", "name": "x", "department": [77], "email": "l@x"})
            )["errcode"],
            60003
        );
        // userids are unique case-insensitively and found that way
        let u = call(&mut st, "user/get", &[("userid", "zhangsan")], json!({}));
        assert_eq!(u["userid"], "ZhangSan");
        assert_eq!(u["status"], 4);
        assert_eq!(u["department"], json!([dev]));

        // a non-empty department cannot be deleted; deletes are by query
        assert_eq!(
            call(
                &mut st,
                "department/delete",
                &[("id", &dev.to_string())],
                json!({})
            )["errcode"],
            60005
        );
        assert_eq!(
            call(&mut st, "department/delete", &[("id", "1")], json!({}))["errcode"],
            60006
        );
        // disable through enable 0, rename through new_userid
        let r = call(
            &mut st,
            "user/update",
            &[],
            json!({"userid": "zhangsan", "enable": 0, "new_userid": "zhangsan001"}),
        );
        assert_eq!(r["errmsg"], "updated");
        assert_eq!(
            call(&mut st, "user/get", &[("userid", "zhangsan")], json!({}))["errcode"],
            60111
        );
        assert_eq!(
            call(&mut st, "user/get", &[("userid", "zhangsan001")], json!({}))["status"],
            2
        );
        assert_eq!(
            call(
                &mut st,
                "user/delete",
                &[("userid", "zhangsan001")],
                json!({})
            )["errmsg"],
            "deleted"
        );
        assert_eq!(
            call(
                &mut st,
                "department/delete",
                &[("id", &dev.to_string())],
                json!({})
            )["errmsg"],
            "deleted"
        );
        assert_eq!(
            st.pending,
            vec![
                ContactChange::DeptCreated { id: dev },
                ContactChange::UserCreated {
                    userid: "ZhangSan".into()
                },
                ContactChange::UserUpdated {
                    userid: "zhangsan".into(),
                    new_userid: Some("zhangsan001".into())
                },
                ContactChange::UserDeleted {
                    userid: "zhangsan001".into()
                },
                ContactChange::DeptDeleted { id: dev },
            ]
        );
    }

    #[test]
    fn list_id_pages_by_key_and_survives_changes_between_pages() {
        let mut st = State::default();
        let a = st.add_dept(1, "a");
        let b = st.add_dept(1, "b");
        for i in 0..5 {
            st.put_user(FakeUser::new(format!("u{i}"), "x", &[a, b]));
        }
        let mut seen = Vec::new();
        let mut cursor = String::new();
        let mut pages = 0;
        loop {
            let r = call(
                &mut st,
                "user/list_id",
                &[],
                json!({"cursor": cursor, "limit": 3}),
            );
            assert_eq!(r["errcode"], 0, "{r}");
            for row in r["dept_user"].as_array().unwrap() {
                seen.push((
                    row["department"].as_i64().unwrap(),
                    row["userid"].as_str().unwrap().to_owned(),
                ));
            }
            pages += 1;
            if pages == 1 {
                // a member who sorts before the cursor is added meanwhile: no shift
                st.put_user(FakeUser::new("u0a", "x", &[a]));
            }
            cursor = r["next_cursor"].as_str().unwrap().to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        assert_eq!(pages, 4);
        let mut want: Vec<(i64, String)> = (0..5)
            .flat_map(|i| [(a, format!("u{i}")), (b, format!("u{i}"))])
            .collect();
        want.push((a, "u0a".into()));
        want.sort();
        // u0a sorted before the first cursor: not served in this pass, nobody twice
        want.retain(|r| r.1 != "u0a");
        assert_eq!(seen, want);
        assert_eq!(
            call(
                &mut st,
                "user/list_id",
                &[],
                json!({"cursor": "!!", "limit": 3})
            )["errcode"],
            40058
        );
        let simple = call(&mut st, "department/simplelist", &[], json!({}));
        assert_eq!(simple["department_id"].as_array().unwrap().len(), 3);
        let sub = call(
            &mut st,
            "department/list",
            &[("id", &a.to_string())],
            json!({}),
        );
        assert_eq!(sub["department"].as_array().unwrap().len(), 1);
    }
}
