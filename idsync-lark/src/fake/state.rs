//! The fake's directory and its contact v3 API: ids of every type, paging with Lark's
//! limits, the documented error codes and HTTP statuses, and the events each write makes.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

/// One department.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeDept {
    /// `od-` + 32 hex.
    pub open_department_id: String,
    /// The custom id.
    pub department_id: String,
    /// Name.
    pub name: String,
    /// Parent's `open_department_id`, `"0"` for top level.
    pub parent: String,
    /// Sort order.
    pub order: i64,
    /// Leader (union_id).
    pub leader: Option<String>,
    seq: u64,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FakeUser {
    /// `ou_` + 32 hex.
    pub open_id: String,
    /// `on_` + 32 hex (the fake's key).
    pub union_id: String,
    /// Tenant id.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Email.
    pub email: Option<String>,
    /// Mobile.
    pub mobile: Option<String>,
    /// Employee number.
    pub employee_no: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Departments (`open_department_id`s, `"0"` for the root).
    pub department_ids: Vec<String>,
    /// The primary department.
    pub primary: Option<String>,
    /// Leader (union_id).
    pub leader: Option<String>,
    /// Suspended.
    pub is_frozen: bool,
    /// Activated (joined).
    pub is_activated: bool,
    /// Employee type.
    pub employee_type: i64,
    seq: u64,
}

impl FakeUser {
    /// An active user with generated ids in `depts`.
    pub fn new(user_id: impl Into<String>, name: impl Into<String>, depts: &[String]) -> Self {
        FakeUser {
            open_id: hex_id("ou_"),
            union_id: hex_id("on_"),
            user_id: user_id.into(),
            name: name.into(),
            department_ids: if depts.is_empty() {
                vec!["0".into()]
            } else {
                depts.to_vec()
            },
            is_activated: true,
            employee_type: 1,
            ..FakeUser::default()
        }
    }
}

/// A random id with a prefix and 32 hex digits.
pub(crate) fn hex_id(prefix: &str) -> String {
    let mut r = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut r);
    let h: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{h}")
}

/// Departments and the primary one, from a write body.
type Memberships = (Vec<String>, Option<String>);

/// An API error: HTTP status, code, message.
pub(crate) type ApiErr = (u16, i64, String);

fn err(status: u16, code: i64, msg: &str) -> ApiErr {
    (status, code, msg.to_owned())
}

/// The data of one fake tenant.
#[derive(Debug, Default)]
pub struct State {
    /// Departments by `open_department_id`.
    pub depts: BTreeMap<String, FakeDept>,
    /// Users by union_id.
    pub users: BTreeMap<String, FakeUser>,
    /// `client_token` → created entity key.
    tokens: HashMap<String, String>,
    seq: u64,
    /// Withhold `user_id` (the app lacks `contact:user.employee_id:readonly`).
    pub withhold_user_id: bool,
    /// Events made by writes, waiting to be pushed: (event_type, event).
    pub(crate) pending: Vec<(String, Value)>,
}

/// Query parameters of one call.
pub(crate) type Query = HashMap<String, String>;

fn q<'a>(q: &'a Query, k: &str) -> &'a str {
    q.get(k).map(String::as_str).unwrap_or_default()
}

fn str_field(b: &Value, k: &str) -> Option<String> {
    b.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a department under `parent` (`"0"` for top level); returns its open id.
    pub fn add_dept(&mut self, parent: &str, name: &str) -> String {
        let seq = self.next_seq();
        let id = hex_id("od-");
        self.depts.insert(
            id.clone(),
            FakeDept {
                open_department_id: id.clone(),
                department_id: format!("D{seq:05}"),
                name: name.to_owned(),
                parent: parent.to_owned(),
                order: 0,
                leader: None,
                seq,
            },
        );
        id
    }

    /// Adds or replaces a user; returns its union_id.
    pub fn put_user(&mut self, mut u: FakeUser) -> String {
        u.seq = self.next_seq();
        let key = u.union_id.clone();
        self.users.insert(key.clone(), u);
        key
    }

    fn user_key(&self, id_type: &str, id: &str) -> Option<String> {
        self.users
            .values()
            .find(|u| match id_type {
                "union_id" => u.union_id == id,
                "user_id" => u.user_id == id,
                _ => u.open_id == id,
            })
            .map(|u| u.union_id.clone())
    }

    fn user_ref(&self, id_type: &str, union: &str) -> Option<String> {
        self.users.get(union).map(|u| match id_type {
            "union_id" => u.union_id.clone(),
            "user_id" => u.user_id.clone(),
            _ => u.open_id.clone(),
        })
    }

    fn dept_key(&self, dept_type: &str, id: &str) -> Option<String> {
        if id == "0" {
            return Some("0".into());
        }
        if dept_type == "department_id" {
            self.depts
                .values()
                .find(|d| d.department_id == id)
                .map(|d| d.open_department_id.clone())
        } else {
            self.depts.contains_key(id).then(|| id.to_owned())
        }
    }

    fn dept_ref(&self, dept_type: &str, open: &str) -> String {
        if open == "0" || dept_type != "department_id" {
            return open.to_owned();
        }
        self.depts
            .get(open)
            .map(|d| d.department_id.clone())
            .unwrap_or_else(|| open.to_owned())
    }

    fn dept_json(&self, d: &FakeDept, ut: &str, dt: &str, event: bool) -> Value {
        let members = self
            .users
            .values()
            .filter(|u| u.department_ids.contains(&d.open_department_id))
            .count();
        let mut o = json!({
            "name": d.name,
            "i18n_name": {"zh_cn": "", "ja_jp": "", "en_us": ""},
            "parent_department_id": self.dept_ref(if event { "open_department_id" } else { dt }, &d.parent),
            "department_id": d.department_id,
            "open_department_id": d.open_department_id,
            "chat_id": "",
            "unit_ids": [],
            "status": {"is_deleted": false},
        });
        if event {
            o["order"] = json!(d.order);
        } else {
            o["order"] = json!(d.order.to_string());
            o["member_count"] = json!(members);
            o["primary_member_count"] = json!(members);
        }
        if let Some(l) = d.leader.as_ref().and_then(|l| self.user_ref(ut, l)) {
            o["leader_user_id"] = json!(l);
        }
        o
    }

    fn user_json(&self, u: &FakeUser, ut: &str, dt: &str) -> Value {
        let mut o = Map::new();
        o.insert("union_id".into(), json!(u.union_id));
        o.insert("open_id".into(), json!(u.open_id));
        if !self.withhold_user_id {
            o.insert("user_id".into(), json!(u.user_id));
        }
        o.insert("name".into(), json!(u.name));
        o.insert("en_name".into(), json!(""));
        for (k, v) in [
            ("email", &u.email),
            ("mobile", &u.mobile),
            ("employee_no", &u.employee_no),
            ("job_title", &u.job_title),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), json!(v));
            }
        }
        o.insert(
            "status".into(),
            json!({"is_frozen": u.is_frozen, "is_resigned": false, "is_activated": u.is_activated,
                   "is_exited": false, "is_unjoin": !u.is_activated}),
        );
        let depts: Vec<String> = u
            .department_ids
            .iter()
            .map(|d| self.dept_ref(dt, d))
            .collect();
        let primary = u
            .primary
            .clone()
            .or_else(|| u.department_ids.first().cloned());
        let orders: Vec<Value> = u
            .department_ids
            .iter()
            .map(|d| {
                json!({"department_id": self.dept_ref(dt, d), "user_order": 0, "department_order": 0,
                       "is_primary_dept": Some(d) == primary.as_ref()})
            })
            .collect();
        o.insert("department_ids".into(), json!(depts));
        o.insert("orders".into(), json!(orders));
        if let Some(l) = u.leader.as_ref().and_then(|l| self.user_ref(ut, l)) {
            o.insert("leader_user_id".into(), json!(l));
        }
        o.insert("employee_type".into(), json!(u.employee_type));
        o.insert("is_tenant_manager".into(), json!(false));
        Value::Object(o)
    }

    /// The event object of a user: every id type, open department ids.
    fn user_event(&self, u: &FakeUser) -> Value {
        let mut v = self.user_json(u, "open_id", "open_department_id");
        v["user_id"] = json!(u.user_id);
        v
    }

    fn page<T: Clone>(all: &[T], query: &Query) -> Result<(Vec<T>, bool, String), ApiErr> {
        let size: usize = match q(query, "page_size") {
            "" => 10,
            s => s
                .parse()
                .map_err(|_| err(400, 99992402, "field validation failed"))?,
        };
        if size > 50 {
            return Err(err(400, 40011, "page size is more than 50 error"));
        }
        let size = size.max(1);
        let start: usize = match q(query, "page_token") {
            "" => 0,
            t => t
                .strip_prefix("pt_")
                .and_then(|n| usize::from_str_radix(n, 16).ok())
                .filter(|n| *n <= all.len())
                .ok_or_else(|| err(400, 40012, "page token invalid error"))?,
        };
        let end = (start + size).min(all.len());
        let more = end < all.len();
        let token = if more {
            format!("pt_{end:x}")
        } else {
            String::new()
        };
        Ok((all[start..end].to_vec(), more, token))
    }

    fn paged(items: &[Value], more: bool, token: &str) -> Value {
        let mut d = json!({"has_more": more});
        if !items.is_empty() {
            d["items"] = json!(items);
        }
        if more {
            d["page_token"] = json!(token);
        }
        d
    }

    /// One contact call: `data` or an error, by method and path below `contact/v3/`.
    pub(crate) fn call(
        &mut self,
        method: &str,
        path: &str,
        query: &Query,
        body: &Value,
    ) -> Result<Value, ApiErr> {
        let ut = match q(query, "user_id_type") {
            "" => "open_id",
            t => t,
        };
        let dt = match q(query, "department_id_type") {
            "" => "open_department_id",
            t => t,
        };
        let ut = ut.to_owned();
        let dt = dt.to_owned();
        let parts: Vec<&str> = path.split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["departments", id, "children"]) => {
                let key = self
                    .dept_key(&dt, id)
                    .ok_or_else(|| err(400, 40015, "department not exist"))?;
                let mut kids: Vec<&FakeDept> =
                    self.depts.values().filter(|d| d.parent == key).collect();
                kids.sort_by_key(|d| (d.order, d.seq));
                let kids: Vec<FakeDept> = kids.into_iter().cloned().collect();
                let (items, more, token) = Self::page(&kids, query)?;
                let items: Vec<Value> = items
                    .iter()
                    .map(|d| self.dept_json(d, &ut, &dt, false))
                    .collect();
                Ok(Self::paged(&items, more, &token))
            }
            ("GET", ["departments", id]) => {
                let key = self
                    .dept_key(&dt, id)
                    .filter(|k| k != "0")
                    .ok_or_else(|| err(400, 40015, "department not exist"))?;
                let d = &self.depts[&key];
                Ok(json!({"department": self.dept_json(d, &ut, &dt, false)}))
            }
            ("GET", ["users", "find_by_department"]) => {
                let id = q(query, "department_id");
                if id.is_empty() {
                    return Err(err(
                        400,
                        99992402,
                        "field validation failed: department_id is required",
                    ));
                }
                let key = self
                    .dept_key(&dt, id)
                    .ok_or_else(|| err(400, 40015, "department not exist"))?;
                let mut members: Vec<&FakeUser> = self
                    .users
                    .values()
                    .filter(|u| u.department_ids.contains(&key))
                    .collect();
                members.sort_by_key(|u| u.seq);
                let members: Vec<FakeUser> = members.into_iter().cloned().collect();
                let (items, more, token) = Self::page(&members, query)?;
                let items: Vec<Value> = items.iter().map(|u| self.user_json(u, &ut, &dt)).collect();
                Ok(Self::paged(&items, more, &token))
            }
            ("GET", ["users", id]) => {
                let key = self
                    .user_key(&ut, id)
                    .ok_or_else(|| err(400, 41012, "user id invalid"))?;
                Ok(json!({"user": self.user_json(&self.users[&key], &ut, &dt)}))
            }
            ("POST", ["users"]) => self.create_user(&ut, &dt, query, body),
            ("PATCH", ["users", id]) => {
                let key = self
                    .user_key(&ut, id)
                    .ok_or_else(|| err(400, 41012, "user id invalid"))?;
                self.patch_user(&key, &ut, &dt, body)
            }
            ("DELETE", ["users", id]) => {
                let key = self
                    .user_key(&ut, id)
                    .ok_or_else(|| err(400, 41012, "user id invalid"))?;
                if let Some(u) = self.users.remove(&key) {
                    let mut object = self.user_event(&u);
                    object["status"]["is_resigned"] = json!(true);
                    self.pending.push((
                        "contact.user.deleted_v3".into(),
                        json!({"object": object, "old_object": {"department_ids": u.department_ids, "open_id": u.open_id}}),
                    ));
                }
                Ok(json!({}))
            }
            ("POST", ["departments"]) => self.create_dept(&ut, &dt, query, body),
            ("PATCH", ["departments", id]) => {
                if *id == "0" {
                    return Err(err(400, 40002, "root department can not be modified"));
                }
                let key = self
                    .dept_key(&dt, id)
                    .ok_or_else(|| err(400, 40015, "department not exist"))?;
                self.patch_dept(&key, &ut, &dt, body)
            }
            ("DELETE", ["departments", id]) => {
                if *id == "0" {
                    return Err(err(400, 40002, "root department can not be deleted"));
                }
                let key = self
                    .dept_key(&dt, id)
                    .ok_or_else(|| err(400, 40015, "department not exist"))?;
                if self.users.values().any(|u| u.department_ids.contains(&key)) {
                    return Err(err(400, 43011, "delete has member dept error"));
                }
                if self.depts.values().any(|d| d.parent == key) {
                    return Err(err(400, 43012, "delete has sub dept department error"));
                }
                if let Some(d) = self.depts.remove(&key) {
                    let mut object = self.dept_json(&d, "open_id", "open_department_id", true);
                    object["status"]["is_deleted"] = json!(true);
                    self.pending.push((
                        "contact.department.deleted_v3".into(),
                        json!({"object": object, "old_object": {"status": {"is_deleted": false}, "open_department_id": d.open_department_id}}),
                    ));
                }
                Ok(json!({}))
            }
            _ => Err(err(404, 0, "")),
        }
    }

    fn check_unique(
        &self,
        except: Option<&str>,
        mobile: Option<&str>,
        email: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<(), ApiErr> {
        for u in self
            .users
            .values()
            .filter(|u| Some(u.union_id.as_str()) != except)
        {
            if mobile.is_some() && u.mobile.as_deref() == mobile {
                return Err(err(400, 41001, "mobile already exist"));
            }
            if email.is_some() && u.email.as_deref() == email {
                return Err(err(400, 41002, "email already exist"));
            }
            if user_id.is_some() && Some(u.user_id.as_str()) == user_id {
                return Err(err(400, 41011, "userID already exist"));
            }
        }
        Ok(())
    }

    fn depts_of(&self, dt: &str, body: &Value) -> Result<Option<Memberships>, ApiErr> {
        let Some(list) = body.get("department_ids").and_then(Value::as_array) else {
            if body.get("orders").is_some() {
                return Err(err(400, 44002, "orders must be sent with department_ids"));
            }
            return Ok(None);
        };
        if list.is_empty() || list.len() > 50 {
            return Err(err(
                400,
                99992402,
                "field validation failed: department_ids",
            ));
        }
        let mut out = Vec::new();
        for d in list {
            let id = d.as_str().unwrap_or_default();
            out.push(
                self.dept_key(dt, id)
                    .ok_or_else(|| err(400, 40015, "department not exist"))?,
            );
        }
        let primary = body
            .get("orders")
            .and_then(Value::as_array)
            .and_then(|o| {
                o.iter()
                    .find(|x| x.get("is_primary_dept") == Some(&json!(true)))
            })
            .and_then(|x| str_field(x, "department_id"))
            .and_then(|d| self.dept_key(dt, &d));
        Ok(Some((out, primary)))
    }

    fn create_user(
        &mut self,
        ut: &str,
        dt: &str,
        query: &Query,
        body: &Value,
    ) -> Result<Value, ApiErr> {
        let token = q(query, "client_token").to_owned();
        if let Some(key) = self.tokens.get(&token).filter(|_| !token.is_empty())
            && let Some(u) = self.users.get(key)
        {
            return Ok(json!({"user": self.user_json(u, ut, dt)}));
        }
        let name = str_field(body, "name").filter(|n| !n.is_empty());
        let mobile = str_field(body, "mobile").filter(|n| !n.is_empty());
        let email = str_field(body, "email").filter(|n| !n.is_empty());
        let employee_type = body.get("employee_type").and_then(Value::as_i64);
        let (Some(name), Some(employee_type)) = (name, employee_type) else {
            return Err(err(
                400,
                99992402,
                "field validation failed: name and employee_type are required",
            ));
        };
        if mobile.is_none() && email.is_none() {
            return Err(err(
                400,
                99992402,
                "field validation failed: mobile is required",
            ));
        }
        let Some((depts, primary)) = self.depts_of(dt, body)? else {
            return Err(err(
                400,
                99992402,
                "field validation failed: department_ids is required",
            ));
        };
        let user_id = str_field(body, "user_id").filter(|n| !n.is_empty());
        self.check_unique(
            None,
            mobile.as_deref(),
            email.as_deref(),
            user_id.as_deref(),
        )?;
        let mut u = FakeUser::new(
            user_id.unwrap_or_else(|| hex_id("")[..8].to_owned()),
            name,
            &depts,
        );
        u.primary = primary;
        u.mobile = mobile;
        u.email = email;
        u.employee_no = str_field(body, "employee_no");
        u.job_title = str_field(body, "job_title");
        u.employee_type = employee_type;
        u.leader = str_field(body, "leader_user_id").and_then(|l| self.user_key(ut, &l));
        let key = self.put_user(u);
        if !token.is_empty() {
            self.tokens.insert(token, key.clone());
        }
        let u = &self.users[&key];
        self.pending.push((
            "contact.user.created_v3".into(),
            json!({"object": self.user_event(u)}),
        ));
        Ok(json!({"user": self.user_json(u, ut, dt)}))
    }

    fn patch_user(&mut self, key: &str, ut: &str, dt: &str, body: &Value) -> Result<Value, ApiErr> {
        let depts = self.depts_of(dt, body)?;
        let nonempty =
            |k: &str| str_field(body, k).map(|v| if v.is_empty() { None } else { Some(v) });
        let mobile = nonempty("mobile");
        let email = nonempty("email");
        let user_id = nonempty("user_id");
        self.check_unique(
            Some(key),
            mobile.clone().flatten().as_deref(),
            email.clone().flatten().as_deref(),
            user_id.clone().flatten().as_deref(),
        )?;
        let leader = match str_field(body, "leader_user_id") {
            None => None,
            Some(l) if l.is_empty() => Some(None),
            Some(l) => Some(Some(
                self.user_key(ut, &l)
                    .ok_or_else(|| err(400, 41012, "leader user id invalid"))?,
            )),
        };
        let before = self.user_event(&self.users[key]);
        let Some(u) = self.users.get_mut(key) else {
            return Err(err(400, 41012, "user id invalid"));
        };
        if let Some(n) = str_field(body, "name") {
            u.name = n;
        }
        if let Some(m) = mobile {
            u.mobile = m;
        }
        if let Some(e) = email {
            u.email = e;
        }
        if let Some(Some(id)) = user_id {
            u.user_id = id;
        }
        if let Some(v) = nonempty("employee_no") {
            u.employee_no = v;
        }
        if let Some(v) = nonempty("job_title") {
            u.job_title = v;
        }
        if let Some(l) = leader {
            u.leader = l;
        }
        if let Some((d, p)) = depts {
            u.department_ids = d;
            u.primary = p;
        }
        if let Some(f) = body.get("is_frozen").and_then(Value::as_bool) {
            u.is_frozen = f;
        }
        if let Some(t) = body.get("employee_type").and_then(Value::as_i64) {
            u.employee_type = t;
        }
        let u = &self.users[key];
        let after = self.user_event(u);
        let old = changed_fields(&before, &after);
        if !old.is_empty() {
            self.pending.push((
                "contact.user.updated_v3".into(),
                json!({"object": after, "old_object": old}),
            ));
        }
        Ok(json!({"user": self.user_json(u, ut, dt)}))
    }

    fn create_dept(
        &mut self,
        ut: &str,
        dt: &str,
        query: &Query,
        body: &Value,
    ) -> Result<Value, ApiErr> {
        let token = q(query, "client_token").to_owned();
        if let Some(key) = self.tokens.get(&token).filter(|_| !token.is_empty())
            && let Some(d) = self.depts.get(key)
        {
            return Ok(json!({"department": self.dept_json(d, ut, dt, false)}));
        }
        let (Some(name), Some(parent)) = (
            str_field(body, "name").filter(|n| !n.is_empty()),
            str_field(body, "parent_department_id"),
        ) else {
            return Err(err(
                400,
                99992402,
                "field validation failed: name and parent_department_id are required",
            ));
        };
        let parent = self
            .dept_key(dt, &parent)
            .ok_or_else(|| err(400, 44101, "parent department not exist"))?;
        if self
            .depts
            .values()
            .any(|d| d.parent == parent && d.name == name)
        {
            return Err(err(400, 43022, "department name already exist"));
        }
        let custom = str_field(body, "department_id");
        if let Some(c) = &custom
            && (c.starts_with("od-") || self.depts.values().any(|d| &d.department_id == c))
        {
            return Err(err(400, 43007, "department id already exist"));
        }
        let key = self.add_dept(&parent, &name);
        let leader = str_field(body, "leader_user_id").and_then(|l| self.user_key(ut, &l));
        if let Some(d) = self.depts.get_mut(&key) {
            if let Some(c) = custom {
                d.department_id = c;
            }
            d.order = body.get("order").and_then(idsync_http::int_of).unwrap_or(0);
            d.leader = leader;
        }
        if !token.is_empty() {
            self.tokens.insert(token, key.clone());
        }
        let d = &self.depts[&key];
        self.pending.push((
            "contact.department.created_v3".into(),
            json!({"object": self.dept_json(d, "open_id", "open_department_id", true)}),
        ));
        Ok(json!({"department": self.dept_json(d, ut, dt, false)}))
    }

    fn patch_dept(&mut self, key: &str, ut: &str, dt: &str, body: &Value) -> Result<Value, ApiErr> {
        let parent = match str_field(body, "parent_department_id") {
            None => None,
            Some(p) => {
                let p = self
                    .dept_key(dt, &p)
                    .ok_or_else(|| err(400, 44101, "parent department not exist"))?;
                // no cycles: the new parent must not be the department or below it
                let mut cur = p.clone();
                while cur != "0" {
                    if cur == key {
                        return Err(err(
                            400,
                            99992402,
                            "field validation failed: parent is a sub-department",
                        ));
                    }
                    cur = self
                        .depts
                        .get(&cur)
                        .map(|d| d.parent.clone())
                        .unwrap_or_else(|| "0".into());
                }
                Some(p)
            }
        };
        let name = str_field(body, "name").filter(|n| !n.is_empty());
        let d0 = self.depts[key].clone();
        let new_parent = parent.unwrap_or(d0.parent.clone());
        let new_name = name.unwrap_or(d0.name.clone());
        if self
            .depts
            .values()
            .any(|d| d.open_department_id != key && d.parent == new_parent && d.name == new_name)
        {
            return Err(err(400, 43022, "department name already exist"));
        }
        let leader = str_field(body, "leader_user_id").map(|l| self.user_key(ut, &l));
        let before = self.dept_json(&d0, "open_id", "open_department_id", true);
        if let Some(d) = self.depts.get_mut(key) {
            d.name = new_name;
            d.parent = new_parent;
            if let Some(o) = body.get("order").and_then(idsync_http::int_of) {
                d.order = o;
            }
            if let Some(l) = leader {
                d.leader = l;
            }
        }
        let d = &self.depts[key];
        let after = self.dept_json(d, "open_id", "open_department_id", true);
        let old = changed_fields(&before, &after);
        if !old.is_empty() {
            self.pending.push((
                "contact.department.updated_v3".into(),
                json!({"object": after, "old_object": old}),
            ));
        }
        Ok(json!({"department": self.dept_json(d, ut, dt, false)}))
    }
}

/// The fields of `before` that differ in `after` (Lark's `old_object`).
fn changed_fields(before: &Value, after: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            if a.get(k) != Some(v) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    m
}
