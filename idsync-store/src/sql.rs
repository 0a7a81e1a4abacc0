//! The [`Store`](idsync_core::Store) implementation shared by SQLite and PostgreSQL.
//!
//! Both backends run the same SQL (sqlx accepts `$1` placeholders on SQLite too); the
//! macro below is expanded once per backend so every query is type-checked against the
//! concrete driver. A backend type provides `reader()`, `exec_write(f)` (run `f` on a
//! connection inside a write transaction) and a `clock` field.
//!
//! Writes are built as a [`Batch`] of statements. PostgreSQL runs them one by one inside
//! the transaction; SQLite joins them into one multi-statement query (one round trip to
//! the connection's thread), wrapped in a savepoint, so that many ops can share one
//! transaction (group commit, see `sqlite.rs`) while each op stays all-or-nothing.
//!
//! `hub_apply` reuses [`Directory::apply`](idsync_core::Directory::apply) for its rules: it
//! loads the rows an op touches (the entity, the parent or orgs it refers to, the parent's
//! ancestor chain for a move, one child and one member for an org delete) into a small
//! `Directory` inside the write transaction, applies the op there, and writes the result
//! back. Errors are therefore exactly those of the in-memory hub.

macro_rules! sql_store {
    (
        $store:ident, $db:ty, $provider:literal, $pre_lock:literal, $combine:ident, $guards:literal,
        $now_us:literal, $share:literal
    ) => {
        impl $store {
            /// Check, on the write transaction's connection, that `fence` still holds its
            /// job's lease on the database's clock ([`Store::fenced`](idsync_core::Store::fenced)).
            /// PostgreSQL share-locks the lease row to commit, so a takeover waits for this
            /// transaction; SQLite holds the database's write lock already.
            async fn check_fence_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                fence: Option<&idsync_core::Fence>,
            ) -> idsync_core::Result<()> {
                let Some(f) = fence else { return Ok(()) };
                let row: Option<(String, i64, bool)> = sqlx::query_as(concat!(
                    "SELECT holder, token, until_us > ",
                    $now_us,
                    " FROM leases WHERE job = $1",
                    $share
                ))
                .bind(f.job.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(Self::err)?;
                match row {
                    Some((holder, token, live))
                        if live && holder == f.holder && u64::try_from(token).ok() == Some(f.token) =>
                    {
                        Ok(())
                    }
                    Some((_, token, _)) => Err(idsync_core::lease_lost(f, u64::try_from(token).ok())),
                    None => Err(idsync_core::lease_lost(f, None)),
                }
            }

            /// Run one batch as a write, fenced when this handle is.
            async fn write_batch_fenced(&self, batch: $crate::sql::Batch) -> idsync_core::Result<u64> {
                let fence = self.fence.clone();
                self.exec_write(move |conn| {
                    Box::pin(async move {
                        Self::check_fence_in(conn, fence.as_ref()).await?;
                        Self::run_batch(conn, batch).await
                    })
                })
                .await
            }

            fn err(e: sqlx::Error) -> idsync_core::Error {
                $crate::util::db_err($provider, e)
            }

            /// Load one org into `dir` (if it exists); returns whether it exists.
            async fn load_org(
                conn: &mut <$db as sqlx::Database>::Connection,
                dir: &mut idsync_core::Directory,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<bool> {
                if dir.orgs.contains_key(anchor) {
                    return Ok(true);
                }
                let row: Option<(sqlx::types::Json<idsync_core::Org>,)> =
                    sqlx::query_as("SELECT body FROM hub_orgs WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Self::err)?;
                match row {
                    Some((sqlx::types::Json(org),)) => {
                        dir.orgs.insert(org.anchor.clone(), org);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }

            /// Load an org and its ancestors (until a root, a missing org, or a cycle).
            async fn load_chain(
                conn: &mut <$db as sqlx::Database>::Connection,
                dir: &mut idsync_core::Directory,
                from: &idsync_core::Anchor,
            ) -> idsync_core::Result<()> {
                let mut seen = std::collections::HashSet::new();
                let mut cur = Some(from.clone());
                while let Some(a) = cur {
                    if !seen.insert(a.clone()) || !Self::load_org(conn, dir, &a).await? {
                        break;
                    }
                    cur = dir.orgs.get(&a).and_then(|o| o.parent.clone());
                }
                Ok(())
            }

            async fn load_account(
                conn: &mut <$db as sqlx::Database>::Connection,
                dir: &mut idsync_core::Directory,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<()> {
                let row: Option<(sqlx::types::Json<idsync_core::Account>,)> =
                    sqlx::query_as("SELECT body FROM hub_accounts WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Self::err)?;
                if let Some((sqlx::types::Json(a),)) = row {
                    dir.accounts.insert(a.anchor.clone(), a);
                }
                Ok(())
            }

            /// Load what `op` touches into a fresh directory.
            async fn load_for(
                conn: &mut <$db as sqlx::Database>::Connection,
                op: &idsync_core::Op,
            ) -> idsync_core::Result<idsync_core::Directory> {
                use idsync_core::{Anchor, Op};
                let mut dir = idsync_core::Directory::new();
                match op {
                    Op::CreateOrg { org } => {
                        Self::load_org(conn, &mut dir, &org.anchor).await?;
                        if let Some(p) = &org.parent {
                            Self::load_org(conn, &mut dir, p).await?;
                        }
                    }
                    Op::UpdateOrg { anchor, .. } => {
                        Self::load_org(conn, &mut dir, anchor).await?;
                    }
                    Op::MoveOrg { anchor, parent } => {
                        Self::load_org(conn, &mut dir, anchor).await?;
                        if let Some(p) = parent {
                            Self::load_chain(conn, &mut dir, p).await?;
                        }
                    }
                    Op::DeleteOrg { anchor } => {
                        Self::load_org(conn, &mut dir, anchor).await?;
                        let child: Option<(sqlx::types::Json<idsync_core::Org>,)> =
                            sqlx::query_as("SELECT body FROM hub_orgs WHERE parent = $1 LIMIT 1")
                                .bind(anchor.as_str())
                                .fetch_optional(&mut *conn)
                                .await
                                .map_err(Self::err)?;
                        if let Some((sqlx::types::Json(c),)) = child {
                            dir.orgs.insert(c.anchor.clone(), c);
                        }
                        let member: Option<(sqlx::types::Json<idsync_core::Account>,)> =
                            sqlx::query_as(
                                "SELECT a.body FROM hub_memberships m \
                                 JOIN hub_accounts a ON a.anchor = m.account \
                                 WHERE m.org = $1 LIMIT 1",
                            )
                            .bind(anchor.as_str())
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(Self::err)?;
                        if let Some((sqlx::types::Json(m),)) = member {
                            dir.accounts.insert(m.anchor.clone(), m);
                        }
                    }
                    Op::CreateAccount { account } => {
                        Self::load_account(conn, &mut dir, &account.anchor).await?;
                        for o in &account.orgs {
                            Self::load_org(conn, &mut dir, o).await?;
                        }
                    }
                    Op::UpdateAccount { anchor, changes } => {
                        Self::load_account(conn, &mut dir, anchor).await?;
                        if let Some(serde_json::Value::Array(orgs)) = changes.get("orgs") {
                            for o in orgs.iter().filter_map(|o| o.as_str()) {
                                Self::load_org(conn, &mut dir, &Anchor::from(o)).await?;
                            }
                        }
                    }
                    Op::DisableAccount { anchor }
                    | Op::EnableAccount { anchor }
                    | Op::DeleteAccount { anchor } => {
                        Self::load_account(conn, &mut dir, anchor).await?;
                    }
                }
                Ok(dir)
            }

            /// The writes of the hub entity after `op`, and of its correlation keys
            /// (`old_keys`: those of the accounts loaded before the op).
            fn write_back(
                batch: &mut $crate::sql::Batch,
                dir: &idsync_core::Directory,
                op: &idsync_core::Op,
                anchor: &idsync_core::Anchor,
                old_keys: &$crate::sql::OldKeys,
            ) -> idsync_core::Result<()> {
                use idsync_core::{EntityKind, Op};
                use $crate::sql::Arg;
                let a = || Arg::Text(anchor.as_str().to_owned());
                match op.entity() {
                    EntityKind::Org => match dir.orgs.get(anchor) {
                        Some(org) => {
                            let sql = if op.is_create() {
                                "INSERT INTO hub_orgs (anchor, parent, body) VALUES ($1, $2, $3)"
                            } else {
                                "UPDATE hub_orgs SET parent = $2, body = $3 WHERE anchor = $1"
                            };
                            batch.push(
                                sql,
                                vec![
                                    a(),
                                    Arg::OptText(org.parent.as_ref().map(|p| p.as_str().to_owned())),
                                    Arg::json(org)?,
                                ],
                            );
                        }
                        None => batch.push("DELETE FROM hub_orgs WHERE anchor = $1", vec![a()]),
                    },
                    EntityKind::Account => match dir.accounts.get(anchor) {
                        Some(acc) => {
                            let sql = if op.is_create() {
                                "INSERT INTO hub_accounts (anchor, body) VALUES ($1, $2)"
                            } else {
                                "UPDATE hub_accounts SET body = $2 WHERE anchor = $1"
                            };
                            batch.push(sql, vec![a(), Arg::json(acc)?]);
                            $crate::sql::key_changes(
                                batch,
                                anchor,
                                $crate::sql::old_keys_of(old_keys, anchor),
                                &$crate::sql::account_keys(acc),
                            );
                            let orgs_changed = op.is_create()
                                || matches!(op, Op::UpdateAccount { changes, .. } if changes.contains_key("orgs"));
                            if orgs_changed {
                                if !op.is_create() {
                                    batch.push(
                                        "DELETE FROM hub_memberships WHERE account = $1",
                                        vec![a()],
                                    );
                                }
                                for o in &acc.orgs {
                                    batch.push(
                                        "INSERT INTO hub_memberships (org, account) VALUES ($1, $2) \
                                         ON CONFLICT (org, account) DO NOTHING",
                                        vec![Arg::Text(o.as_str().to_owned()), a()],
                                    );
                                }
                            }
                        }
                        None => {
                            $crate::sql::key_changes(
                                batch,
                                anchor,
                                $crate::sql::old_keys_of(old_keys, anchor),
                                &[],
                            );
                            batch.push("DELETE FROM hub_memberships WHERE account = $1", vec![a()]);
                            batch.push("DELETE FROM hub_accounts WHERE anchor = $1", vec![a()]);
                        }
                    },
                }
                Ok(())
            }

            /// Apply `op` to the hub inside the write transaction on `conn`.
            async fn hub_apply_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                op: &idsync_core::Op,
                record: Option<&idsync_core::OpRecord>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<idsync_core::Applied> {
                use $crate::sql::Arg;
                if $guards && op.is_create() {
                    return Self::create_in(conn, op, record, now).await;
                }
                if !$pre_lock.is_empty() {
                    sqlx::query($pre_lock).execute(&mut *conn).await.map_err(Self::err)?;
                }
                let mut dir = Self::load_for(conn, op).await?;
                // The keys the index holds for the account as loaded, to replace them by
                // those it has after the op.
                let old_keys: $crate::sql::OldKeys = if op.entity() == idsync_core::EntityKind::Account {
                    dir.accounts
                        .values()
                        .map(|a| (a.anchor.clone(), $crate::sql::account_keys(a)))
                        .collect()
                } else {
                    Vec::new()
                };
                let (applied, change) = dir.apply(op, None)?;
                let mut batch = $crate::sql::Batch::default();
                Self::write_back(&mut batch, &dir, op, &change.anchor, &old_keys)?;
                batch.push("UPDATE feed_head SET seq = seq + 1 WHERE id = 1", vec![]);
                batch.push(
                    "INSERT INTO feed (seq, kind, anchor, entity, at_us) \
                     SELECT seq, $1, $2, $3, $4 FROM feed_head WHERE id = 1",
                    vec![
                        Arg::Text($crate::util::kind_str(op.entity()).to_owned()),
                        Arg::Text(change.anchor.as_str().to_owned()),
                        Arg::Json(change.after.clone()),
                        Arg::Int($crate::util::to_us(now)),
                    ],
                );
                if let Some(rec) = record {
                    let mut rec = rec.clone();
                    if let Some(a) = &mut rec.audit {
                        a.before = change.before;
                        a.after = change.after;
                    }
                    $crate::sql::record_batch(&mut batch, &rec)?;
                }
                Self::run_batch(conn, batch).await?;
                Ok(applied)
            }

            /// A create in one round trip, without reading first: the guard views check the
            /// directory's rules in the order `Directory::apply` does (anchor free, then
            /// parent / orgs present) and abort the write otherwise.
            async fn create_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                op: &idsync_core::Op,
                record: Option<&idsync_core::OpRecord>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<idsync_core::Applied> {
                use idsync_core::Op;
                use $crate::sql::Arg;
                let text = |a: &idsync_core::Anchor| Arg::Text(a.as_str().to_owned());
                let mut batch = $crate::sql::Batch::default();
                let (anchor, after) = match op {
                    Op::CreateOrg { org } => {
                        if org.anchor.is_empty() {
                            return Err(idsync_core::Error::invalid_data("org with an empty anchor"));
                        }
                        batch.push("INSERT INTO guard_org_absent (anchor) VALUES ($1)", vec![text(&org.anchor)]);
                        if let Some(p) = &org.parent {
                            batch.push("INSERT INTO guard_org_present (anchor) VALUES ($1)", vec![text(p)]);
                        }
                        batch.push(
                            "INSERT INTO hub_orgs (anchor, parent, body) VALUES ($1, $2, $3)",
                            vec![
                                text(&org.anchor),
                                Arg::OptText(org.parent.as_ref().map(|p| p.as_str().to_owned())),
                                Arg::json(org)?,
                            ],
                        );
                        (org.anchor.clone(), serde_json::to_value(org)?)
                    }
                    Op::CreateAccount { account } => {
                        if account.anchor.is_empty() {
                            return Err(idsync_core::Error::invalid_data(
                                "account with an empty anchor",
                            ));
                        }
                        batch.push(
                            "INSERT INTO guard_account_absent (anchor) VALUES ($1)",
                            vec![text(&account.anchor)],
                        );
                        let orgs: std::collections::BTreeSet<&idsync_core::Anchor> =
                            account.orgs.iter().collect();
                        for o in &orgs {
                            batch.push("INSERT INTO guard_org_present (anchor) VALUES ($1)", vec![text(o)]);
                        }
                        let body = serde_json::to_value(account)?;
                        batch.push(
                            "INSERT INTO hub_accounts (anchor, body) VALUES ($1, $2)",
                            vec![text(&account.anchor), Arg::Json(Some(body.clone()))],
                        );
                        for o in &orgs {
                            batch.push(
                                "INSERT INTO hub_memberships (org, account) VALUES ($1, $2)",
                                vec![text(o), text(&account.anchor)],
                            );
                        }
                        $crate::sql::key_changes(
                            &mut batch,
                            &account.anchor,
                            &[],
                            &$crate::sql::account_keys(account),
                        );
                        (account.anchor.clone(), body)
                    }
                    _ => return Err(idsync_core::Error::unexpected("create_in: not a create")),
                };
                batch.push("UPDATE feed_head SET seq = seq + 1 WHERE id = 1", vec![]);
                batch.push(
                    "INSERT INTO feed (seq, kind, anchor, entity, at_us) \
                     SELECT seq, $1, $2, $3, $4 FROM feed_head WHERE id = 1",
                    vec![
                        Arg::Text($crate::util::kind_str(op.entity()).to_owned()),
                        text(&anchor),
                        Arg::Json(Some(after.clone())),
                        Arg::Int($crate::util::to_us(now)),
                    ],
                );
                if let Some(rec) = record {
                    let mut rec = rec.clone();
                    if let Some(a) = &mut rec.audit {
                        a.before = None;
                        a.after = Some(after);
                    }
                    $crate::sql::record_batch(&mut batch, &rec)?;
                }
                Self::run_batch(conn, batch).await?;
                Ok(idsync_core::Applied::with_anchor(anchor))
            }

            /// Run a batch of statements (one round trip on SQLite).
            async fn run_batch(
                conn: &mut <$db as sqlx::Database>::Connection,
                batch: $crate::sql::Batch,
            ) -> idsync_core::Result<u64> {
                let mut rows = 0;
                for (sql, args) in $crate::sql::$combine(batch) {
                    rows += Self::exec_args(conn, &sql, args).await?;
                }
                Ok(rows)
            }

            /// Run one statement with its arguments.
            async fn exec_args(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: &str,
                args: Vec<$crate::sql::Arg>,
            ) -> idsync_core::Result<u64> {
                use $crate::sql::Arg;
                let mut q = sqlx::query(sql);
                for a in args {
                    q = match a {
                        Arg::Text(v) => q.bind(v),
                        Arg::OptText(v) => q.bind(v),
                        Arg::Int(v) => q.bind(v),
                        Arg::OptInt(v) => q.bind(v),
                        Arg::Json(v) => q.bind(v.map(sqlx::types::Json)),
                    };
                }
                Ok(q.execute(&mut *conn).await.map_err(Self::err)?.rows_affected())
            }

            /// Insert `rows` (one value per entry of `cols`: `J` for a JSON column, `-` for
            /// any other) with multi-row `INSERT`s of at most
            /// [`ROWS_PER_INSERT`]($crate::sql::ROWS_PER_INSERT) rows.
            async fn insert_rows(
                conn: &mut <$db as sqlx::Database>::Connection,
                head: &str,
                tail: &str,
                cols: &str,
                rows: Vec<Vec<$crate::sql::Arg>>,
            ) -> idsync_core::Result<()> {
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<Vec<$crate::sql::Arg>> =
                        rows.by_ref().take($crate::sql::ROWS_PER_INSERT).collect();
                    let sql = $crate::sql::multi_row(head, tail, cols, chunk.len(), !$guards);
                    Self::exec_args(conn, &sql, chunk.into_iter().flatten().collect()).await?;
                }
                Ok(())
            }

            /// How many of `anchors` (distinct) are hub orgs.
            async fn count_orgs(
                conn: &mut <$db as sqlx::Database>::Connection,
                anchors: &[&idsync_core::Anchor],
            ) -> idsync_core::Result<usize> {
                let mut found = 0;
                for chunk in anchors.chunks($crate::sql::ROWS_PER_INSERT) {
                    let sql = format!(
                        "SELECT count(*) FROM hub_orgs WHERE anchor IN ({})",
                        $crate::sql::placeholders(chunk.len(), !$guards)
                    );
                    let mut q = sqlx::query_as::<_, (i64,)>(&sql);
                    for a in chunk {
                        q = q.bind(a.as_str());
                    }
                    let (n,) = q.fetch_one(&mut *conn).await.map_err(Self::err)?;
                    found += $crate::util::to_usize(n)?;
                }
                Ok(found)
            }

            /// The writes of a hub batch, in one transaction (SQLite: the writer's group;
            /// PostgreSQL: a transaction of its own). Runs of plain creates go as multi-row
            /// statements (in a savepoint; when such a run fails it is undone and its writes
            /// go one at a time, so each gets its own answer); every other write goes one at
            /// a time in its own savepoint.
            async fn hub_batch_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                writes: Vec<idsync_core::HubWrite>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<Vec<idsync_core::Result<idsync_core::Applied>>> {
                // The writer rolls back to `idsync_write` if this fails half-way.
                Self::exec_args(conn, "SAVEPOINT idsync_write", vec![]).await?;
                let mut out = Vec::with_capacity(writes.len());
                let mut i = 0;
                while i < writes.len() {
                    let kind = $crate::sql::plain_create(&writes[i]);
                    let mut j = i + 1;
                    if kind.is_some() {
                        while j < writes.len() && $crate::sql::plain_create(&writes[j]) == kind {
                            j += 1;
                        }
                    }
                    if j - i > 1 {
                        Self::exec_args(conn, "SAVEPOINT idsync_fast", vec![]).await?;
                        match Self::creates_in(conn, &writes[i..j], now).await {
                            Ok(anchors) => {
                                Self::exec_args(conn, "RELEASE idsync_fast", vec![]).await?;
                                out.extend(anchors.into_iter().map(|a| Ok(idsync_core::Applied::with_anchor(a))));
                                i = j;
                                continue;
                            }
                            Err(_) => {
                                Self::exec_args(conn, "ROLLBACK TO idsync_fast", vec![]).await?;
                                Self::exec_args(conn, "RELEASE idsync_fast", vec![]).await?;
                            }
                        }
                    }
                    for w in &writes[i..j] {
                        Self::exec_args(conn, "SAVEPOINT idsync_one", vec![]).await?;
                        let r = Self::hub_apply_in(conn, &w.op, w.record.as_ref(), now).await;
                        if r.is_err() {
                            Self::exec_args(conn, "ROLLBACK TO idsync_one", vec![]).await?;
                        }
                        Self::exec_args(conn, "RELEASE idsync_one", vec![]).await?;
                        out.push(r);
                    }
                    i = j;
                }
                Self::exec_args(conn, "RELEASE idsync_write", vec![]).await?;
                Ok(out)
            }

            /// Plain creates of one kind (see [`plain_create`]($crate::sql::plain_create)) as
            /// multi-row statements: entities, memberships, feed entries, links, journal and
            /// audit rows. Fails as a whole when any create would (anchor taken, parent or org
            /// missing); the caller then undoes it and goes one by one.
            async fn creates_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                writes: &[idsync_core::HubWrite],
                now: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<Vec<idsync_core::Anchor>> {
                use idsync_core::{LinkChange, Op};
                use $crate::sql::Arg;
                let text = |a: &idsync_core::Anchor| Arg::Text(a.as_str().to_owned());
                let at = $crate::util::to_us(now);
                let mut anchors = Vec::with_capacity(writes.len());
                let mut bodies = Vec::with_capacity(writes.len());
                let mut entity_rows = Vec::with_capacity(writes.len());
                let mut needed: std::collections::BTreeSet<&idsync_core::Anchor> =
                    std::collections::BTreeSet::new();
                let mut member_rows = Vec::new();
                let mut key_rows = Vec::new();
                for w in writes {
                    match &w.op {
                        Op::CreateOrg { org } => {
                            let body = serde_json::to_string(org)?;
                            if let Some(p) = &org.parent {
                                needed.insert(p);
                            }
                            entity_rows.push(vec![
                                text(&org.anchor),
                                Arg::OptText(org.parent.as_ref().map(|p| p.as_str().to_owned())),
                                Arg::Text(body.clone()),
                            ]);
                            anchors.push(org.anchor.clone());
                            bodies.push(body);
                        }
                        Op::CreateAccount { account } => {
                            let body = serde_json::to_string(account)?;
                            let orgs: std::collections::BTreeSet<&idsync_core::Anchor> =
                                account.orgs.iter().collect();
                            for o in orgs {
                                needed.insert(o);
                                member_rows.push(vec![text(o), text(&account.anchor)]);
                            }
                            for (field, key) in $crate::sql::account_keys(account) {
                                key_rows.push((field, key, account.anchor.as_str()));
                            }
                            entity_rows.push(vec![text(&account.anchor), Arg::Text(body.clone())]);
                            anchors.push(account.anchor.clone());
                            bodies.push(body);
                        }
                        _ => return Err(idsync_core::Error::unexpected("creates_in: not a create")),
                    }
                }
                let kind = writes
                    .first()
                    .map(|w| w.op.entity())
                    .unwrap_or(idsync_core::EntityKind::Account);
                let kind_s = $crate::util::kind_str(kind);
                // Hub writes of all workers serialize on the feed head (PostgreSQL), so the
                // checks below see every earlier write.
                if !$pre_lock.is_empty() {
                    sqlx::query($pre_lock).execute(&mut *conn).await.map_err(Self::err)?;
                }
                // The orgs referred to must exist before this batch (an org created in the
                // same batch is not seen: such a batch goes one by one). A taken anchor fails
                // the entity insert on its primary key.
                let needed: Vec<&idsync_core::Anchor> = needed.into_iter().collect();
                if Self::count_orgs(conn, &needed).await? != needed.len() {
                    return Err(idsync_core::Error::not_found("an org a create refers to"));
                }
                match kind {
                    idsync_core::EntityKind::Org => {
                        Self::insert_rows(conn, "INSERT INTO hub_orgs (anchor, parent, body) VALUES ", "", "--J", entity_rows).await?;
                    }
                    idsync_core::EntityKind::Account => {
                        Self::insert_rows(conn, "INSERT INTO hub_accounts (anchor, body) VALUES ", "", "-J", entity_rows).await?;
                        Self::insert_rows(conn, "INSERT INTO hub_memberships (org, account) VALUES ", "", "--", member_rows).await?;
                        // In index order: each B-tree page is reached once and in turn. No
                        // conflict clause: the anchors are new (a key row left over would
                        // fail the run, whose writes then go one by one, and those skip it).
                        key_rows.sort_unstable();
                        let key_rows = key_rows
                            .into_iter()
                            .map(|(f, k, a)| $crate::sql::key_row(f, k, a))
                            .collect();
                        Self::insert_rows(conn, $crate::sql::KEYS_INSERT_HEAD, "", "---", key_rows).await?;
                    }
                }
                // Feed: the batch's sequence numbers in order.
                let n = $crate::util::to_i64(writes.len());
                let (last,): (i64,) =
                    sqlx::query_as("UPDATE feed_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
                        .bind(n)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(Self::err)?;
                let first = last - n + 1;
                let feed_rows: Vec<Vec<Arg>> = anchors
                    .iter()
                    .zip(&bodies)
                    .enumerate()
                    .map(|(k, (a, b))| {
                        vec![
                            Arg::Int(first + $crate::util::to_i64(k)),
                            Arg::Text(kind_s.to_owned()),
                            text(a),
                            Arg::Text(b.clone()),
                            Arg::Int(at),
                        ]
                    })
                    .collect();
                Self::insert_rows(conn, "INSERT INTO feed (seq, kind, anchor, entity, at_us) VALUES ", "", "---J-", feed_rows).await?;
                // Records.
                let mut link_rows = Vec::new();
                let mut journal_rows = Vec::new();
                let mut audit_rows = Vec::new();
                for (w, body) in writes.iter().zip(&bodies) {
                    let Some(rec) = &w.record else { continue };
                    if let Some(LinkChange::Put { source, target }) = &rec.link {
                        link_rows.push(vec![
                            Arg::Text(rec.job.clone()),
                            Arg::Text($crate::util::kind_str(rec.kind).to_owned()),
                            text(source),
                            text(target),
                        ]);
                    }
                    if let Some(j) = &rec.journal {
                        journal_rows.push($crate::sql::journal_args(
                            &rec.job,
                            j,
                            Arg::Text(serde_json::to_string(&j.op)?),
                        ));
                    }
                    if let Some(a) = &rec.audit {
                        audit_rows.push(vec![
                            Arg::Text(a.run_id.clone()),
                            Arg::Text(a.job.clone()),
                            Arg::Text($crate::util::kind_str(a.kind).to_owned()),
                            text(&a.anchor),
                            Arg::Text(a.op.as_str().to_owned()),
                            Arg::OptText(None),
                            Arg::Text(body.clone()),
                            Arg::Int($crate::util::to_us(a.at)),
                        ]);
                    }
                }
                Self::insert_rows(
                    conn,
                    "INSERT INTO links (job, kind, source, target) VALUES ",
                    " ON CONFLICT (job, kind, source) DO UPDATE SET target = excluded.target",
                    "----",
                    link_rows,
                )
                .await?;
                Self::insert_rows(
                    conn,
                    "INSERT INTO journal (run_id, op_index, job, op, source_anchor, \
                     target_anchor, state, error, at_us) VALUES ",
                    $crate::sql::journal_upsert!(),
                    "---J-----",
                    journal_rows,
                )
                .await?;
                Self::insert_rows(
                    conn,
                    "INSERT INTO audit (run_id, job, kind, anchor, op, before, after, at_us) VALUES ",
                    "",
                    "-----JJ-",
                    audit_rows,
                )
                .await?;
                Ok(anchors)
            }

            /// Fill `hub_keys` from the hub accounts when it is missing keys (a store made
            /// before the table; see [`BACKFILL_START`]($crate::sql::BACKFILL_START)), a
            /// page of accounts per write transaction, resuming where a crash left off.
            /// Called at open, after migrating. A store that needs none pays one read.
            /// Several processes opening at once each run pages until the backfill is done;
            /// the pages serialize on the hub write lock and rewriting a key is harmless.
            pub(crate) async fn backfill_keys(&self) -> idsync_core::Result<()> {
                let (running, any_key, any_account): (i64, i64, i64) =
                    sqlx::query_as($crate::sql::BACKFILL_NEEDED)
                        .fetch_one(self.reader())
                        .await
                        .map_err(Self::err)?;
                if running == 0 && (any_key > 0 || any_account == 0) {
                    return Ok(());
                }
                let mut accounts = 0usize;
                loop {
                    let (done, more) = self
                        .exec_write(|conn| Box::pin(Self::backfill_page(conn)))
                        .await
                        .map_err(|e| e.with_context("step", "backfill of hub_keys"))?;
                    accounts += done;
                    if !more {
                        break;
                    }
                }
                tracing::info!(accounts, "hub_keys backfilled");
                Ok(())
            }

            /// One page of the `hub_keys` backfill: the keys of the next
            /// [`BACKFILL_PAGE`]($crate::sql::BACKFILL_PAGE) accounts after the marker, and
            /// the marker moved past them (or removed after the last). Returns the accounts
            /// done and whether more may follow.
            async fn backfill_page(
                conn: &mut <$db as sqlx::Database>::Connection,
            ) -> idsync_core::Result<(usize, bool)> {
                use $crate::sql::Arg;
                // The writer rolls back to `idsync_write` if this fails half-way.
                Self::exec_args(conn, "SAVEPOINT idsync_write", vec![]).await?;
                if !$pre_lock.is_empty() {
                    sqlx::query($pre_lock).execute(&mut *conn).await.map_err(Self::err)?;
                }
                Self::exec_args(conn, $crate::sql::BACKFILL_START, vec![]).await?;
                let marker: Option<(String,)> =
                    sqlx::query_as("SELECT after FROM hub_keys_backfill WHERE id = 1")
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(Self::err)?;
                let out = match marker {
                    None => (0, false),
                    Some((after,)) => {
                        let rows: Vec<(String, sqlx::types::Json<idsync_core::Account>)> =
                            sqlx::query_as(
                                "SELECT anchor, body FROM hub_accounts WHERE anchor > $1 \
                                 ORDER BY anchor LIMIT $2",
                            )
                            .bind(after)
                            .bind($crate::util::to_i64($crate::sql::BACKFILL_PAGE))
                            .fetch_all(&mut *conn)
                            .await
                            .map_err(Self::err)?;
                        let mut key_rows = Vec::new();
                        for (anchor, sqlx::types::Json(account)) in &rows {
                            for (field, key) in $crate::sql::account_keys(account) {
                                key_rows.push($crate::sql::key_row(field, key, anchor));
                            }
                        }
                        Self::insert_rows(
                            conn,
                            $crate::sql::KEYS_INSERT_HEAD,
                            $crate::sql::KEYS_INSERT_TAIL,
                            "---",
                            key_rows,
                        )
                        .await?;
                        match rows.last() {
                            Some((last, _)) if rows.len() == $crate::sql::BACKFILL_PAGE => {
                                Self::exec_args(
                                    conn,
                                    "UPDATE hub_keys_backfill SET after = $1 WHERE id = 1",
                                    vec![Arg::Text(last.clone())],
                                )
                                .await?;
                                (rows.len(), true)
                            }
                            _ => {
                                Self::exec_args(conn, "DELETE FROM hub_keys_backfill WHERE id = 1", vec![])
                                    .await?;
                                (rows.len(), false)
                            }
                        }
                    }
                };
                Self::exec_args(conn, "RELEASE idsync_write", vec![]).await?;
                Ok(out)
            }

            /// The links of a job whose `column` (`source` or `target`) is one of `anchors`,
            /// ordered by source anchor.
            async fn links_where(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
                column: &'static str,
                anchors: &[idsync_core::Anchor],
            ) -> idsync_core::Result<Vec<idsync_core::Link>> {
                let k = $crate::util::kind_str(kind);
                let mut out = Vec::with_capacity(anchors.len());
                for chunk in anchors.chunks($crate::sql::ROWS_PER_INSERT) {
                    let sql = format!(
                        "SELECT source, target FROM links WHERE job = $1 AND kind = $2 \
                         AND {column} IN ({})",
                        $crate::sql::numbered_from(3, chunk.len())
                    );
                    let mut q = sqlx::query_as::<_, (String, String)>(&sql).bind(job).bind(k);
                    for a in chunk {
                        q = q.bind(a.as_str());
                    }
                    let rows = q.fetch_all(self.reader()).await.map_err(Self::err)?;
                    out.extend(rows.into_iter().map(|(s, t)| idsync_core::Link {
                        kind,
                        source: idsync_core::Anchor::from(s),
                        target: idsync_core::Anchor::from(t),
                    }));
                }
                out.sort_by(|a, b| a.source.cmp(&b.source));
                out.dedup_by(|a, b| a.source == b.source);
                Ok(out)
            }

            /// Run one batch as a write.
            async fn write_batch(&self, batch: $crate::sql::Batch) -> idsync_core::Result<u64> {
                self.exec_write(move |conn| Box::pin(Self::run_batch(conn, batch)))
                    .await
            }

            /// Run one `DELETE` whose `$1` is a time (retention); the rows removed.
            async fn delete_before(
                &self,
                sql: &'static str,
                before: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<u64> {
                let mut batch = $crate::sql::Batch::default();
                batch.push(sql, vec![$crate::sql::Arg::Int($crate::util::to_us(before))]);
                self.write_batch(batch).await
            }
        }

        #[async_trait::async_trait]
        impl idsync_core::Store for $store {
            async fn hub_orgs(
                &self,
                page: idsync_core::PageRequest,
            ) -> idsync_core::Result<idsync_core::Page<idsync_core::Org>> {
                use sqlx::types::Json;
                let size = $crate::util::page_size(&page);
                let limit = $crate::util::to_i64(size + 1);
                let rows: Vec<(String, Json<idsync_core::Org>)> = match &page.token {
                    Some(t) => sqlx::query_as(
                        "SELECT anchor, body FROM hub_orgs WHERE anchor > $1 ORDER BY anchor LIMIT $2",
                    )
                    .bind(t.0.as_str())
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                    None => sqlx::query_as("SELECT anchor, body FROM hub_orgs ORDER BY anchor LIMIT $1")
                        .bind(limit)
                        .fetch_all(self.reader())
                        .await,
                }
                .map_err(Self::err)?;
                Ok($crate::util::make_page(
                    rows.into_iter().map(|(k, Json(v))| (k, v)).collect(),
                    size,
                ))
            }

            async fn hub_accounts(
                &self,
                page: idsync_core::PageRequest,
            ) -> idsync_core::Result<idsync_core::Page<idsync_core::Account>> {
                use sqlx::types::Json;
                let size = $crate::util::page_size(&page);
                let limit = $crate::util::to_i64(size + 1);
                let rows: Vec<(String, Json<idsync_core::Account>)> = match &page.token {
                    Some(t) => sqlx::query_as(
                        "SELECT anchor, body FROM hub_accounts WHERE anchor > $1 ORDER BY anchor LIMIT $2",
                    )
                    .bind(t.0.as_str())
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                    None => {
                        sqlx::query_as("SELECT anchor, body FROM hub_accounts ORDER BY anchor LIMIT $1")
                            .bind(limit)
                            .fetch_all(self.reader())
                            .await
                    }
                }
                .map_err(Self::err)?;
                Ok($crate::util::make_page(
                    rows.into_iter().map(|(k, Json(v))| (k, v)).collect(),
                    size,
                ))
            }

            async fn hub_org(
                &self,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<Option<idsync_core::Org>> {
                let row: Option<(sqlx::types::Json<idsync_core::Org>,)> =
                    sqlx::query_as("SELECT body FROM hub_orgs WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(self.reader())
                        .await
                        .map_err(Self::err)?;
                Ok(row.map(|(j,)| j.0))
            }

            async fn hub_account(
                &self,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<Option<idsync_core::Account>> {
                let row: Option<(sqlx::types::Json<idsync_core::Account>,)> =
                    sqlx::query_as("SELECT body FROM hub_accounts WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(self.reader())
                        .await
                        .map_err(Self::err)?;
                Ok(row.map(|(j,)| j.0))
            }

            async fn hub_find_accounts(
                &self,
                field: &str,
                value: &str,
            ) -> idsync_core::Result<Vec<idsync_core::Account>> {
                if !idsync_core::HUB_KEY_FIELDS.contains(&field) {
                    return Err(idsync_core::store::unindexed(field));
                }
                let Some(key) = idsync_core::correlation_key(value) else {
                    return Ok(Vec::new());
                };
                let rows: Vec<(sqlx::types::Json<idsync_core::Account>,)> =
                    sqlx::query_as($crate::sql::FIND_BY_KEY)
                        .bind(field)
                        .bind(key.as_ref())
                        .fetch_all(self.reader())
                        .await
                        .map_err(|e| Self::err(e).with_context("field", field))?;
                Ok(rows.into_iter().map(|(j,)| j.0).collect())
            }

            // --- positional listing (SCIM list pages) ----------------------------------
            // OFFSET walks the primary key (no bodies are read for the skipped rows);
            // members come through hub_memberships' primary key (org, account).

            async fn hub_account_count(
                &self,
                except: &[idsync_core::Anchor],
            ) -> idsync_core::Result<usize> {
                let sql = format!(
                    "SELECT count(*) FROM hub_accounts{}",
                    $crate::sql::not_in(except.len(), 1)
                );
                let mut q = sqlx::query_as::<_, (i64,)>(&sql);
                for a in except {
                    q = q.bind(a.as_str());
                }
                let (n,) = q.fetch_one(self.reader()).await.map_err(Self::err)?;
                Ok(usize::try_from(n).unwrap_or(0))
            }

            async fn hub_accounts_at(
                &self,
                offset: usize,
                limit: usize,
                except: &[idsync_core::Anchor],
            ) -> idsync_core::Result<Vec<idsync_core::Account>> {
                // Placeholders in the order they appear (SQLite numbers `$N` that way).
                let n = except.len();
                let sql = format!(
                    "SELECT body FROM hub_accounts{} ORDER BY anchor LIMIT ${} OFFSET ${}",
                    $crate::sql::not_in(n, 1),
                    n + 1,
                    n + 2
                );
                let mut q = sqlx::query_as::<_, (sqlx::types::Json<idsync_core::Account>,)>(&sql);
                for a in except {
                    q = q.bind(a.as_str());
                }
                let q = q
                    .bind($crate::util::to_i64(limit))
                    .bind($crate::util::to_i64(offset));
                let rows = q.fetch_all(self.reader()).await.map_err(Self::err)?;
                Ok(rows.into_iter().map(|(j,)| j.0).collect())
            }

            async fn hub_org_count(&self) -> idsync_core::Result<usize> {
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM hub_orgs")
                    .fetch_one(self.reader())
                    .await
                    .map_err(Self::err)?;
                Ok(usize::try_from(n).unwrap_or(0))
            }

            async fn hub_orgs_at(
                &self,
                offset: usize,
                limit: usize,
            ) -> idsync_core::Result<Vec<idsync_core::Org>> {
                let rows: Vec<(sqlx::types::Json<idsync_core::Org>,)> = sqlx::query_as(
                    "SELECT body FROM hub_orgs ORDER BY anchor LIMIT $1 OFFSET $2",
                )
                .bind($crate::util::to_i64(limit))
                .bind($crate::util::to_i64(offset))
                .fetch_all(self.reader())
                .await
                .map_err(Self::err)?;
                Ok(rows.into_iter().map(|(j,)| j.0).collect())
            }

            async fn hub_org_members(
                &self,
                org: &idsync_core::Anchor,
            ) -> idsync_core::Result<Vec<idsync_core::Account>> {
                let rows: Vec<(sqlx::types::Json<idsync_core::Account>,)> = sqlx::query_as(
                    "SELECT a.body FROM hub_memberships m JOIN hub_accounts a ON a.anchor = m.account \
                     WHERE m.org = $1 ORDER BY m.account",
                )
                .bind(org.as_str())
                .fetch_all(self.reader())
                .await
                .map_err(|e| Self::err(e).with_context("org", org.as_str()))?;
                Ok(rows.into_iter().map(|(j,)| j.0).collect())
            }
            // --- end of positional listing ------------------------------------------------

            async fn hub_apply(
                &self,
                op: &idsync_core::Op,
                record: Option<&idsync_core::OpRecord>,
            ) -> idsync_core::Result<idsync_core::Applied> {
                let now = self.clock.now();
                let op = op.clone();
                let record = record.cloned();
                let fence = self.fence.clone();
                self.exec_write(move |conn| {
                    Box::pin(async move {
                        Self::check_fence_in(conn, fence.as_ref()).await?;
                        Self::hub_apply_in(conn, &op, record.as_ref(), now).await
                    })
                })
                .await
            }

            async fn hub_apply_batch(
                &self,
                writes: Vec<idsync_core::HubWrite>,
            ) -> Vec<idsync_core::Result<idsync_core::Applied>> {
                let now = self.clock.now();
                let n = writes.len();
                let fence = self.fence.clone();
                match self
                    .exec_write(move |conn| {
                        Box::pin(async move {
                            Self::check_fence_in(conn, fence.as_ref()).await?;
                            Self::hub_batch_in(conn, writes, now).await
                        })
                    })
                    .await
                {
                    Ok(v) => v,
                    Err(e) => (0..n).map(|_| Err(e.clone_lossy())).collect(),
                }
            }

            async fn links(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
                page: idsync_core::PageRequest,
            ) -> idsync_core::Result<idsync_core::Page<idsync_core::Link>> {
                let size = $crate::util::page_size(&page);
                let limit = $crate::util::to_i64(size + 1);
                let k = $crate::util::kind_str(kind);
                let rows: Vec<(String, String)> = match &page.token {
                    Some(t) => sqlx::query_as(
                        "SELECT source, target FROM links WHERE job = $1 AND kind = $2 \
                         AND source > $3 ORDER BY source LIMIT $4",
                    )
                    .bind(job)
                    .bind(k)
                    .bind(t.0.as_str())
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                    None => sqlx::query_as(
                        "SELECT source, target FROM links WHERE job = $1 AND kind = $2 \
                         ORDER BY source LIMIT $3",
                    )
                    .bind(job)
                    .bind(k)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                }
                .map_err(Self::err)?;
                Ok($crate::util::make_page(
                    rows.into_iter()
                        .map(|(s, t)| {
                            let link = idsync_core::Link {
                                kind,
                                source: idsync_core::Anchor::from(s.as_str()),
                                target: idsync_core::Anchor::from(t),
                            };
                            (s, link)
                        })
                        .collect(),
                    size,
                ))
            }

            async fn links_of(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
                sources: &[idsync_core::Anchor],
            ) -> idsync_core::Result<Vec<idsync_core::Link>> {
                self.links_where(job, kind, "source", sources).await
            }

            async fn links_to(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
                targets: &[idsync_core::Anchor],
            ) -> idsync_core::Result<Vec<idsync_core::Link>> {
                self.links_where(job, kind, "target", targets).await
            }

            async fn link_count(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
            ) -> idsync_core::Result<usize> {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM links WHERE job = $1 AND kind = $2")
                        .bind(job)
                        .bind($crate::util::kind_str(kind))
                        .fetch_one(self.reader())
                        .await
                        .map_err(Self::err)?;
                Ok(usize::try_from(n).unwrap_or(0))
            }

            async fn shadow(
                &self,
                job: &str,
                kind: idsync_core::EntityKind,
                page: idsync_core::PageRequest,
            ) -> idsync_core::Result<idsync_core::Page<serde_json::Value>> {
                use sqlx::types::Json;
                let size = $crate::util::page_size(&page);
                let limit = $crate::util::to_i64(size + 1);
                let k = $crate::util::kind_str(kind);
                let rows: Vec<(String, Json<serde_json::Value>)> = match &page.token {
                    Some(t) => sqlx::query_as(
                        "SELECT anchor, entity FROM shadow WHERE job = $1 AND kind = $2 \
                         AND anchor > $3 ORDER BY anchor LIMIT $4",
                    )
                    .bind(job)
                    .bind(k)
                    .bind(t.0.as_str())
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                    None => sqlx::query_as(
                        "SELECT anchor, entity FROM shadow WHERE job = $1 AND kind = $2 \
                         ORDER BY anchor LIMIT $3",
                    )
                    .bind(job)
                    .bind(k)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                }
                .map_err(Self::err)?;
                Ok($crate::util::make_page(
                    rows.into_iter().map(|(k, Json(v))| (k, v)).collect(),
                    size,
                ))
            }

            async fn cursor(&self, job: &str) -> idsync_core::Result<Option<idsync_core::SyncCursor>> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT cursor FROM cursors WHERE job = $1")
                        .bind(job)
                        .fetch_optional(self.reader())
                        .await
                        .map_err(Self::err)?;
                Ok(row.map(|(c,)| idsync_core::SyncCursor(c)))
            }

            async fn commit_cursor(
                &self,
                job: &str,
                expected: Option<&idsync_core::SyncCursor>,
                cursor: &idsync_core::SyncCursor,
            ) -> idsync_core::Result<()> {
                // One statement each way, so the check and the write are atomic.
                use $crate::sql::Arg;
                let mut batch = $crate::sql::Batch::default();
                match expected {
                    None => batch.push(
                        "INSERT INTO cursors (job, cursor) VALUES ($1, $2) \
                         ON CONFLICT (job) DO NOTHING",
                        vec![Arg::Text(job.to_owned()), Arg::Text(cursor.0.clone())],
                    ),
                    Some(e) => batch.push(
                        "UPDATE cursors SET cursor = $3 WHERE job = $1 AND cursor = $2",
                        vec![
                            Arg::Text(job.to_owned()),
                            Arg::Text(e.0.clone()),
                            Arg::Text(cursor.0.clone()),
                        ],
                    ),
                }
                let done = self.write_batch_fenced(batch).await?;
                if done == 1 {
                    Ok(())
                } else {
                    Err(idsync_core::Error::new(
                        idsync_core::ErrorKind::Conflict,
                        format!("the cursor of job {job} moved since it was read"),
                    ))
                }
            }

            async fn put_run(&self, run: &idsync_core::RunRecord) -> idsync_core::Result<()> {
                use $crate::sql::Arg;
                use $crate::util::to_us;
                let mut batch = $crate::sql::Batch::default();
                batch.push(
                    "INSERT INTO runs (id, job, status, started_us, finished_us, plan, summary) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (id) DO UPDATE SET job = excluded.job, status = excluded.status, \
                     started_us = excluded.started_us, finished_us = excluded.finished_us, \
                     plan = excluded.plan, summary = excluded.summary",
                    vec![
                        Arg::Text(run.id.clone()),
                        Arg::Text(run.job.clone()),
                        Arg::Text(run.status.as_str().to_owned()),
                        Arg::Int(to_us(run.started_at)),
                        Arg::OptInt(run.finished_at.map(to_us)),
                        Arg::Json(run.plan.clone()),
                        Arg::Json(run.summary.clone()),
                    ],
                );
                self.write_batch(batch).await.map(|_| ())
            }

            async fn run(&self, id: &str) -> idsync_core::Result<Option<idsync_core::RunRecord>> {
                let row: Option<$crate::sql::RunRow> = sqlx::query_as(
                    "SELECT id, job, status, started_us, finished_us, plan, summary \
                     FROM runs WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await
                .map_err(Self::err)?;
                row.map($crate::sql::run_from_row).transpose()
            }

            async fn runs(
                &self,
                job: Option<&str>,
                limit: usize,
            ) -> idsync_core::Result<Vec<idsync_core::RunRecord>> {
                let limit = $crate::util::to_i64(limit);
                let rows: Vec<$crate::sql::RunRow> = match job {
                    Some(j) => sqlx::query_as(
                        "SELECT id, job, status, started_us, finished_us, plan, summary \
                         FROM runs WHERE job = $1 ORDER BY started_us DESC, id DESC LIMIT $2",
                    )
                    .bind(j)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                    None => sqlx::query_as(
                        "SELECT id, job, status, started_us, finished_us, plan, summary \
                         FROM runs ORDER BY started_us DESC, id DESC LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await,
                }
                .map_err(Self::err)?;
                rows.into_iter().map($crate::sql::run_from_row).collect()
            }

            async fn journal_intent(
                &self,
                entry: &idsync_core::JournalEntry,
            ) -> idsync_core::Result<()> {
                use $crate::sql::Arg;
                use $crate::util::{state_str, to_i64, to_us};
                let mut batch = $crate::sql::Batch::default();
                batch.push(
                    concat!(
                        "INSERT INTO journal (run_id, op_index, job, op, source_anchor, \
                         target_anchor, state, error, at_us) \
                         VALUES ($1, $2, COALESCE((SELECT job FROM runs WHERE id = $1), ''), \
                         $3, $4, $5, $6, $7, $8)",
                        $crate::sql::journal_upsert!()
                    ),
                    vec![
                        Arg::Text(entry.run_id.clone()),
                        Arg::Int(to_i64(entry.op_index)),
                        Arg::json(&entry.op)?,
                        Arg::OptText(entry.source_anchor.as_ref().map(|a| a.as_str().to_owned())),
                        Arg::OptText(entry.target_anchor.as_ref().map(|a| a.as_str().to_owned())),
                        Arg::Text(state_str(entry.state).to_owned()),
                        Arg::OptText(entry.error.clone()),
                        Arg::Int(to_us(entry.at)),
                    ],
                );
                self.write_batch_fenced(batch).await.map(|_| ())
            }

            async fn record(&self, record: &idsync_core::OpRecord) -> idsync_core::Result<()> {
                let mut batch = $crate::sql::Batch::default();
                $crate::sql::record_batch(&mut batch, record)?;
                self.write_batch_fenced(batch).await.map(|_| ())
            }

            async fn journal(
                &self,
                run_id: &str,
            ) -> idsync_core::Result<Vec<idsync_core::JournalEntry>> {
                let rows: Vec<$crate::sql::JournalRow> = sqlx::query_as(
                    "SELECT run_id, op_index, op, source_anchor, target_anchor, state, error, at_us \
                     FROM journal WHERE run_id = $1 ORDER BY op_index",
                )
                .bind(run_id)
                .fetch_all(self.reader())
                .await
                .map_err(Self::err)?;
                rows.into_iter().map($crate::sql::journal_from_row).collect()
            }

            async fn open_intents(
                &self,
                job: &str,
            ) -> idsync_core::Result<Vec<idsync_core::JournalEntry>> {
                let rows: Vec<$crate::sql::JournalRow> = sqlx::query_as(
                    "SELECT run_id, op_index, op, source_anchor, target_anchor, state, error, at_us \
                     FROM journal WHERE job = $1 AND state = 'intent' \
                     UNION ALL \
                     SELECT run_id, op_index, op, source_anchor, target_anchor, state, error, at_us \
                     FROM journal WHERE job = $1 AND state = 'unknown' \
                     ORDER BY 8, 2",
                )
                .bind(job)
                .fetch_all(self.reader())
                .await
                .map_err(Self::err)?;
                rows.into_iter().map($crate::sql::journal_from_row).collect()
            }

            async fn audit(
                &self,
                kind: idsync_core::EntityKind,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<Vec<idsync_core::AuditEntry>> {
                let rows: Vec<$crate::sql::AuditRow> = sqlx::query_as(
                    "SELECT run_id, job, kind, anchor, op, before, after, at_us \
                     FROM audit WHERE kind = $1 AND anchor = $2 ORDER BY id",
                )
                .bind($crate::util::kind_str(kind))
                .bind(anchor.as_str())
                .fetch_all(self.reader())
                .await
                .map_err(Self::err)?;
                rows.into_iter().map($crate::sql::audit_from_row).collect()
            }

            async fn feed(
                &self,
                since: u64,
                limit: usize,
            ) -> idsync_core::Result<Vec<idsync_core::FeedEntry>> {
                let since = i64::try_from(since).unwrap_or(i64::MAX);
                let rows: Vec<$crate::sql::FeedRow> = sqlx::query_as(
                    "SELECT seq, kind, anchor, entity, at_us FROM feed \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(since)
                .bind($crate::util::to_i64(limit))
                .fetch_all(self.reader())
                .await
                .map_err(Self::err)?;
                rows.into_iter().map($crate::sql::feed_from_row).collect()
            }

            async fn feed_head(&self) -> idsync_core::Result<u64> {
                let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM feed_head WHERE id = 1")
                    .fetch_one(self.reader())
                    .await
                    .map_err(Self::err)?;
                Ok(u64::try_from(seq).unwrap_or(0))
            }

            // --- feed retention
            async fn feed_prune(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<u64> {
                // A prefix of the feed: everything before the first entry made at or after
                // `before` (found walking the feed in order, so the cost follows what is
                // pruned), or everything up to the head when there is none.
                self.delete_before(
                    "DELETE FROM feed WHERE seq < COALESCE(\
                     (SELECT seq FROM feed WHERE at_us >= $1 ORDER BY seq LIMIT 1), \
                     (SELECT seq + 1 FROM feed_head WHERE id = 1))",
                    before,
                )
                .await
            }

            async fn feed_floor(&self) -> idsync_core::Result<u64> {
                let (seq,): (i64,) = sqlx::query_as(
                    "SELECT COALESCE((SELECT MIN(seq) - 1 FROM feed), \
                     (SELECT seq FROM feed_head WHERE id = 1))",
                )
                .fetch_one(self.reader())
                .await
                .map_err(Self::err)?;
                Ok(u64::try_from(seq).unwrap_or(0))
            }

            // --- idempotency keys
            async fn idempotency_get(
                &self,
                scope: &str,
                key: &str,
            ) -> idsync_core::Result<Option<idsync_core::store::IdempotencyRecord>> {
                let row: Option<$crate::sql::IdempotencyRow> = sqlx::query_as(
                    "SELECT scope, key, request_hash, response, at_us FROM idempotency \
                     WHERE scope = $1 AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .fetch_optional(self.reader())
                .await
                .map_err(Self::err)?;
                row.map($crate::sql::idempotency_from_row).transpose()
            }

            async fn idempotency_put(
                &self,
                rec: &idsync_core::store::IdempotencyRecord,
            ) -> idsync_core::Result<Option<idsync_core::store::IdempotencyRecord>> {
                use $crate::sql::Arg;
                let mut batch = $crate::sql::Batch::default();
                batch.push(
                    "INSERT INTO idempotency (scope, key, request_hash, response, at_us) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
                    vec![
                        Arg::Text(rec.scope.clone()),
                        Arg::Text(rec.key.clone()),
                        Arg::Text(rec.request_hash.clone()),
                        Arg::Json(Some(rec.response.clone())),
                        Arg::Int($crate::util::to_us(rec.at)),
                    ],
                );
                if self.write_batch(batch).await? == 1 {
                    return Ok(None);
                }
                match self.idempotency_get(&rec.scope, &rec.key).await? {
                    Some(existing) => Ok(Some(existing)),
                    None => Err(idsync_core::Error::unexpected(format!(
                        "store: idempotency key {:?} of {} was neither stored nor found",
                        rec.key, rec.scope
                    ))),
                }
            }

            async fn idempotency_prune(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<u64> {
                self.delete_before("DELETE FROM idempotency WHERE at_us < $1", before)
                    .await
            }

            // --- inbox
            async fn inbox_push(
                &self,
                push: &idsync_core::InboxPush,
            ) -> idsync_core::Result<Option<u64>> {
                use $crate::sql::Arg;
                let at_us = $crate::util::to_us(push.at);
                let window_us = i64::try_from(push.window.as_micros()).map_err(|_| {
                    idsync_core::Error::config("inbox replay window out of range")
                })?;
                let until_us = at_us.saturating_add(window_us);
                let push = push.clone();
                let r = self
                    .exec_write(move |conn| {
                        Box::pin(async move {
                            // The writer rolls back to `idsync_write` if this fails half-way
                            // (a replay found after a first key was claimed, too).
                            Self::exec_args(conn, "SAVEPOINT idsync_write", vec![]).await?;
                            for k in &push.keys {
                                let claimed = Self::exec_args(
                                    conn,
                                    "INSERT INTO inbox_keys (stream, replay_key, until_us) \
                                     VALUES ($1, $2, $3) ON CONFLICT (stream, replay_key) \
                                     DO UPDATE SET until_us = excluded.until_us \
                                     WHERE inbox_keys.until_us <= $4",
                                    vec![
                                        Arg::Text(push.stream.clone()),
                                        Arg::Text(k.clone()),
                                        Arg::Int(until_us),
                                        Arg::Int(at_us),
                                    ],
                                )
                                .await?;
                                if claimed == 0 {
                                    return Err($crate::sql::inbox_replay(&push.stream));
                                }
                            }
                            // The head first: on PostgreSQL it row-locks the stream's head to
                            // commit, so pushes of a stream serialize and commit in order.
                            let (seq,): (i64,) = sqlx::query_as(
                                "INSERT INTO inbox_heads (stream, seq) VALUES ($1, 1) \
                                 ON CONFLICT (stream) DO UPDATE SET seq = inbox_heads.seq + 1 \
                                 RETURNING seq",
                            )
                            .bind(push.stream.as_str())
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(Self::err)?;
                            sqlx::query(
                                "INSERT INTO inbox (stream, seq, event_type, targets, at_us) \
                                 VALUES ($1, $2, $3, $4, $5)",
                            )
                            .bind(push.stream.as_str())
                            .bind(seq)
                            .bind(push.event_type.as_str())
                            .bind(sqlx::types::Json(&push.targets))
                            .bind(at_us)
                            .execute(&mut *conn)
                            .await
                            .map_err(Self::err)?;
                            Self::exec_args(conn, "RELEASE idsync_write", vec![]).await?;
                            Ok(seq)
                        })
                    })
                    .await;
                match r {
                    Ok(seq) => Ok(Some(u64::try_from(seq).unwrap_or(0))),
                    Err(e) if $crate::sql::is_inbox_replay(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }

            async fn inbox_since(
                &self,
                stream: &str,
                after: u64,
                limit: usize,
            ) -> idsync_core::Result<Vec<idsync_core::InboxEvent>> {
                let rows: Vec<(i64, String, sqlx::types::Json<Vec<idsync_core::InboxTarget>>, i64)> =
                    sqlx::query_as(
                        "SELECT seq, event_type, targets, at_us FROM inbox \
                         WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(stream)
                    .bind(i64::try_from(after).unwrap_or(i64::MAX))
                    .bind($crate::util::to_i64(limit))
                    .fetch_all(self.reader())
                    .await
                    .map_err(Self::err)?;
                rows.into_iter()
                    .map(|(seq, event_type, sqlx::types::Json(targets), at_us)| {
                        Ok(idsync_core::InboxEvent {
                            seq: u64::try_from(seq).map_err(|_| {
                                idsync_core::Error::invalid_data(format!("store: inbox seq {seq}"))
                            })?,
                            event_type,
                            targets,
                            at: $crate::util::from_us(at_us)?,
                        })
                    })
                    .collect()
            }

            async fn inbox_head(&self, stream: &str) -> idsync_core::Result<u64> {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT seq FROM inbox_heads WHERE stream = $1")
                        .bind(stream)
                        .fetch_optional(self.reader())
                        .await
                        .map_err(Self::err)?;
                Ok(row.map_or(0, |(s,)| u64::try_from(s).unwrap_or(0)))
            }

            async fn inbox_trim(
                &self,
                stream: &str,
                upto: u64,
                now: chrono::DateTime<chrono::Utc>,
            ) -> idsync_core::Result<u64> {
                use $crate::sql::Arg;
                let stream = stream.to_owned();
                let upto = i64::try_from(upto).unwrap_or(i64::MAX);
                let now_us = $crate::util::to_us(now);
                self.exec_write(move |conn| {
                    Box::pin(async move {
                        Self::exec_args(conn, "SAVEPOINT idsync_write", vec![]).await?;
                        let n = Self::exec_args(
                            conn,
                            "DELETE FROM inbox WHERE stream = $1 AND seq <= $2",
                            vec![Arg::Text(stream.clone()), Arg::Int(upto)],
                        )
                        .await?;
                        Self::exec_args(
                            conn,
                            "DELETE FROM inbox_keys WHERE stream = $1 AND until_us <= $2",
                            vec![Arg::Text(stream), Arg::Int(now_us)],
                        )
                        .await?;
                        Self::exec_args(conn, "RELEASE idsync_write", vec![]).await?;
                        Ok(n)
                    })
                })
                .await
            }

            async fn acquire_lease(
                &self,
                job: &str,
                holder: &str,
                ttl: std::time::Duration,
            ) -> idsync_core::Result<Option<idsync_core::Lease>> {
                // The database's clock judges expiry, in one statement: a free, run-out or
                // own lease is (re)granted; the token grows when the holder changes.
                let ttl_us = i64::try_from(ttl.as_micros())
                    .map_err(|_| idsync_core::Error::config("lease ttl out of range"))?;
                let (job, holder) = (job.to_owned(), holder.to_owned());
                let (j, h) = (job.clone(), holder.clone());
                let row: Option<(i64, i64)> = self
                    .exec_write(move |conn| {
                        Box::pin(async move {
                            sqlx::query_as(concat!(
                                "INSERT INTO leases (job, holder, until_us, token) \
                                 VALUES ($1, $2, ", $now_us, " + $3, 1) \
                                 ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                                 until_us = excluded.until_us, \
                                 token = CASE WHEN leases.holder = excluded.holder \
                                 THEN leases.token ELSE leases.token + 1 END \
                                 WHERE leases.holder = excluded.holder OR leases.until_us <= ",
                                $now_us,
                                " RETURNING token, until_us"
                            ))
                            .bind(j)
                            .bind(h)
                            .bind(ttl_us)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(Self::err)
                        })
                    })
                    .await?;
                let Some((token, until_us)) = row else { return Ok(None) };
                Ok(Some(idsync_core::Lease {
                    job,
                    holder,
                    token: u64::try_from(token).map_err(|_| {
                        idsync_core::Error::invalid_data(format!("store: lease token {token}"))
                    })?,
                    expires_at: $crate::util::from_us(until_us)?,
                }))
            }

            async fn release_lease(&self, job: &str, holder: &str) -> idsync_core::Result<()> {
                // The row stays, run out, so the next holder's token is still greater.
                use $crate::sql::Arg;
                let mut batch = $crate::sql::Batch::default();
                batch.push(
                    concat!(
                        "UPDATE leases SET until_us = ",
                        $now_us,
                        " WHERE job = $1 AND holder = $2 AND until_us > ",
                        $now_us
                    ),
                    vec![Arg::Text(job.to_owned()), Arg::Text(holder.to_owned())],
                );
                self.write_batch(batch).await.map(|_| ())
            }

            fn fenced(&self, fence: idsync_core::Fence) -> std::sync::Arc<dyn idsync_core::Store> {
                std::sync::Arc::new($store {
                    fence: Some(fence),
                    ..self.clone()
                })
            }
        }
    };
}

pub(crate) use sql_store;

use std::borrow::Cow;

use idsync_core::{
    Account, Anchor, AuditEntry, Entity, EntityKind, FeedEntry, HUB_KEY_FIELDS, HubWrite,
    JournalEntry, LinkChange, Op, OpRecord, Result, RunRecord, ShadowChange, correlation_key,
};
use serde_json::Value;
use sqlx::types::Json;

use crate::util::{
    from_us, kind_str, parse_kind, parse_state, parse_status, state_str, to_i64, to_us, to_usize,
};

/// The context key of the error an inbox push returns inside its transaction when it finds
/// a replay (so that the transaction rolls back); `inbox_push` answers `None` for it.
const INBOX_REPLAY: &str = "inbox_replay";

pub(crate) fn inbox_replay(stream: &str) -> idsync_core::Error {
    idsync_core::Error::new(
        idsync_core::ErrorKind::AlreadyExists,
        format!("inbox {stream}: the event was recorded before (a replay)"),
    )
    .with_context(INBOX_REPLAY, stream.to_owned())
}

pub(crate) fn is_inbox_replay(e: &idsync_core::Error) -> bool {
    e.context().iter().any(|(k, _)| k == INBOX_REPLAY)
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Json(Option<Value>),
}

impl Arg {
    pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Arg> {
        Ok(Arg::Json(Some(serde_json::to_value(v)?)))
    }
}

/// Statements that make one write; each numbers its parameters from `$1`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    stmts: Vec<(Cow<'static, str>, Vec<Arg>)>,
}

impl Batch {
    pub(crate) fn push(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) {
        self.stmts.push((sql.into(), args));
    }
}

/// PostgreSQL: the statements as they are (a prepared statement holds one statement).
pub(crate) fn one_by_one(batch: Batch) -> Vec<(String, Vec<Arg>)> {
    batch
        .stmts
        .into_iter()
        .map(|(sql, args)| (sql.into_owned(), args))
        .collect()
}

/// The savepoint a joined SQLite batch runs in; the writer rolls back to it when the batch
/// fails half-way.
pub(crate) const SAVEPOINT: &str = "idsync_write";

/// SQLite: one query of all statements, parameters renumbered across them, in a savepoint
/// when there is more than one statement.
pub(crate) fn joined(batch: Batch) -> Vec<(String, Vec<Arg>)> {
    if batch.stmts.len() <= 1 {
        return one_by_one(batch);
    }
    let mut sql = format!("SAVEPOINT {SAVEPOINT};\n");
    let mut all = Vec::new();
    for (stmt, args) in batch.stmts {
        let offset = all.len();
        renumber(&stmt, offset, &mut sql);
        sql.push_str(";\n");
        all.extend(args);
    }
    sql.push_str("RELEASE ");
    sql.push_str(SAVEPOINT);
    vec![(sql, all)]
}

/// Copy `stmt` into `out` with every `$N` shifted to `$N+offset`.
fn renumber(stmt: &str, offset: usize, out: &mut String) {
    let mut chars = stmt.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = 0usize;
        let mut digits = false;
        while let Some(&(_, d)) = chars.peek() {
            match d.to_digit(10) {
                Some(v) => {
                    n = n * 10 + v as usize;
                    digits = true;
                    chars.next();
                }
                None => break,
            }
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
}

/// The conflict clause of every journal insert (a literal, for `concat!`): a later record
/// of an op replaces the earlier.
macro_rules! journal_upsert {
    () => {
        " ON CONFLICT (run_id, op_index) DO UPDATE SET job = excluded.job, op = excluded.op, \
         source_anchor = excluded.source_anchor, target_anchor = excluded.target_anchor, \
         state = excluded.state, error = excluded.error, at_us = excluded.at_us"
    };
}
pub(crate) use journal_upsert;

/// The values of a journal row, in the column order `run_id, op_index, job, op,
/// source_anchor, target_anchor, state, error, at_us`.
/// `op` is the op as JSON (a `Json` argument, or text on SQLite).
pub(crate) fn journal_args(job: &str, j: &JournalEntry, op: Arg) -> Vec<Arg> {
    vec![
        Arg::Text(j.run_id.clone()),
        Arg::Int(to_i64(j.op_index)),
        Arg::Text(job.to_owned()),
        op,
        Arg::OptText(j.source_anchor.as_ref().map(|a| a.as_str().to_owned())),
        Arg::OptText(j.target_anchor.as_ref().map(|a| a.as_str().to_owned())),
        Arg::Text(state_str(j.state).to_owned()),
        Arg::OptText(j.error.clone()),
        Arg::Int(to_us(j.at)),
    ]
}

/// Rows per multi-row `INSERT` of a hub batch (at most 9 values a row: well under SQLite's
/// 32,766 parameters).
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// `head (?, ?), (?, ?) tail` (SQLite) or `head ($1, $2::jsonb), ($3, $4::jsonb) tail`
/// (PostgreSQL, `numbered`) for `rows` rows with one value per entry of `cols`: `J` for a
/// JSON column (bound as text; PostgreSQL casts it to `jsonb`), anything else for a plain
/// one.
///
/// Anonymous `?` parameters on SQLite, not `$N`: SQLite looks a named parameter up by
/// walking the statement's list of names, so binding hundreds of `$N` costs time quadratic
/// in their number (it was most of a batch's time). PostgreSQL numbers them natively.
pub(crate) fn multi_row(head: &str, tail: &str, cols: &str, rows: usize, numbered: bool) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * (cols.len() * 6 + 4));
    sql.push_str(head);
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (c, kind) in cols.chars().enumerate() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if numbered {
                let _ = write!(sql, "${n}");
                if kind == 'J' {
                    sql.push_str("::jsonb");
                }
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// `?, ?, ?` or `$1, $2, $3` (`numbered`) for `n` values.
pub(crate) fn placeholders(n: usize, numbered: bool) -> String {
    (1..=n)
        .map(|i| {
            if numbered {
                format!("${i}")
            } else {
                "?".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$start, $start+1, ...`: `n` numbered placeholders (both databases take them in plain
/// queries).
pub(crate) fn numbered_from(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The entity kind of a write the multi-row create path takes: a create with a non-empty
/// anchor whose record (if any) puts at most a link, a journal entry and an audit entry.
pub(crate) fn plain_create(w: &HubWrite) -> Option<EntityKind> {
    let anchor_ok = match &w.op {
        Op::CreateOrg { org } => !org.anchor.is_empty(),
        Op::CreateAccount { account } => !account.anchor.is_empty(),
        _ => false,
    };
    let record_ok = w.record.as_ref().is_none_or(|r| {
        r.shadow.is_none()
            && matches!(r.link, None | Some(LinkChange::Put { .. }))
            && r.kind == w.op.entity()
    });
    (anchor_ok && record_ok).then(|| w.op.entity())
}

/// The correlation keys of an account that the hub indexes (table `hub_keys`): `(field,
/// key)` for each field of [`HUB_KEY_FIELDS`] whose value has a key under
/// [`correlation_key`] (the one rule; a blank value has none). The same comparison as
/// [`key_matches`](idsync_core::key_matches), computed once at write time.
pub(crate) fn account_keys(account: &Account) -> Vec<(&'static str, String)> {
    HUB_KEY_FIELDS
        .iter()
        .filter_map(|&field| match account.get(field) {
            Value::String(s) => correlation_key(&s).map(|k| (field, k.into_owned())),
            _ => None,
        })
        .collect()
}

/// The keys of some hub accounts as they were loaded before an op changed them.
pub(crate) type OldKeys = Vec<(Anchor, Vec<(&'static str, String)>)>;

/// The old keys of `anchor` among `old` (none when it was not loaded: a new account).
pub(crate) fn old_keys_of<'a>(old: &'a OldKeys, anchor: &Anchor) -> &'a [(&'static str, String)] {
    old.iter()
        .find(|(a, _)| a == anchor)
        .map(|(_, k)| k.as_slice())
        .unwrap_or(&[])
}

/// The head and tail of a multi-row insert of `hub_keys` rows `(field, key, anchor)`. A
/// row that is there already is left alone (the table holds facts, so writing one twice
/// is harmless; it lets a backfill and the write paths overlap).
pub(crate) const KEYS_INSERT_HEAD: &str = "INSERT INTO hub_keys (field, key, anchor) VALUES ";
/// See [`KEYS_INSERT_HEAD`].
pub(crate) const KEYS_INSERT_TAIL: &str = " ON CONFLICT (field, key, anchor) DO NOTHING";

/// A `hub_keys` row.
pub(crate) fn key_row(field: &str, key: String, anchor: &str) -> Vec<Arg> {
    vec![
        Arg::Text(field.to_owned()),
        Arg::Text(key),
        Arg::Text(anchor.to_owned()),
    ]
}

/// The statements that turn the indexed keys of account `anchor` from `old` into `new`:
/// one primary-key delete per key that went away, one insert of the keys that came.
pub(crate) fn key_changes(
    batch: &mut Batch,
    anchor: &Anchor,
    old: &[(&'static str, String)],
    new: &[(&'static str, String)],
) {
    for (field, key) in old.iter().filter(|k| !new.contains(k)) {
        batch.push(
            "DELETE FROM hub_keys WHERE field = $1 AND key = $2 AND anchor = $3",
            key_row(field, key.clone(), anchor.as_str()),
        );
    }
    let added: Vec<&(&'static str, String)> = new.iter().filter(|k| !old.contains(k)).collect();
    if added.is_empty() {
        return;
    }
    let sql = multi_row(KEYS_INSERT_HEAD, KEYS_INSERT_TAIL, "---", added.len(), true);
    let args = added
        .into_iter()
        .flat_map(|(field, key)| key_row(field, key.clone(), anchor.as_str()))
        .collect();
    batch.push(sql, args);
}

/// ` WHERE anchor NOT IN ($first, ...)` for `n` anchors, or nothing for none
/// ([`Store::hub_accounts_at`](idsync_core::Store::hub_accounts_at)).
pub(crate) fn not_in(n: usize, first: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let marks: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!(" WHERE anchor NOT IN ({})", marks.join(", "))
}

/// Hub accounts by one correlation key, in anchor order: one probe of the `hub_keys`
/// primary key, one primary-key read of `hub_accounts` per match.
pub(crate) const FIND_BY_KEY: &str = "SELECT a.body FROM hub_keys k \
     JOIN hub_accounts a ON a.anchor = k.anchor \
     WHERE k.field = $1 AND k.key = $2 ORDER BY k.anchor";

/// Accounts a page of the `hub_keys` backfill reads (and writes the keys of) in one
/// transaction.
pub(crate) const BACKFILL_PAGE: usize = 1000;

/// Starts a backfill of `hub_keys` when the hub has accounts but the table has no key at
/// all (a store made before the table, or one whose table was emptied); run under the hub
/// write lock, so it never starts again after a concurrent backfill has finished.
pub(crate) const BACKFILL_START: &str = "INSERT INTO hub_keys_backfill (id, after) SELECT 1, '' \
     WHERE NOT EXISTS (SELECT 1 FROM hub_keys) AND EXISTS (SELECT 1 FROM hub_accounts) \
     ON CONFLICT (id) DO NOTHING";

/// Whether a backfill is under way (first) or needed (the others: some key, some account),
/// as counts of at most one row, the same type on both databases.
pub(crate) const BACKFILL_NEEDED: &str = "SELECT \
     (SELECT COUNT(*) FROM hub_keys_backfill), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM hub_keys LIMIT 1) AS k), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM hub_accounts LIMIT 1) AS a)";

/// The writes of an op record: link, shadow, journal, audit.
pub(crate) fn record_batch(batch: &mut Batch, rec: &OpRecord) -> Result<()> {
    let kind = || Arg::Text(kind_str(rec.kind).to_owned());
    let job = || Arg::Text(rec.job.clone());
    match &rec.link {
        Some(LinkChange::Put { source, target }) => batch.push(
            "INSERT INTO links (job, kind, source, target) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, kind, source) DO UPDATE SET target = excluded.target",
            vec![
                job(),
                kind(),
                Arg::Text(source.as_str().to_owned()),
                Arg::Text(target.as_str().to_owned()),
            ],
        ),
        Some(LinkChange::Remove { source }) => batch.push(
            "DELETE FROM links WHERE job = $1 AND kind = $2 AND source = $3",
            vec![job(), kind(), Arg::Text(source.as_str().to_owned())],
        ),
        None => {}
    }
    match &rec.shadow {
        Some(ShadowChange::Put { anchor, entity }) => batch.push(
            "INSERT INTO shadow (job, kind, anchor, entity) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, kind, anchor) DO UPDATE SET entity = excluded.entity",
            vec![
                job(),
                kind(),
                Arg::Text(anchor.as_str().to_owned()),
                Arg::Json(Some(entity.clone())),
            ],
        ),
        Some(ShadowChange::Remove { anchor }) => batch.push(
            "DELETE FROM shadow WHERE job = $1 AND kind = $2 AND anchor = $3",
            vec![job(), kind(), Arg::Text(anchor.as_str().to_owned())],
        ),
        None => {}
    }
    if let Some(j) = &rec.journal {
        batch.push(
            concat!(
                "INSERT INTO journal (run_id, op_index, job, op, source_anchor, target_anchor, \
                 state, error, at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                journal_upsert!()
            ),
            journal_args(&rec.job, j, Arg::json(&j.op)?),
        );
    }
    if let Some(a) = &rec.audit {
        batch.push(
            "INSERT INTO audit (run_id, job, kind, anchor, op, before, after, at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                Arg::Text(a.run_id.clone()),
                Arg::Text(a.job.clone()),
                Arg::Text(kind_str(a.kind).to_owned()),
                Arg::Text(a.anchor.as_str().to_owned()),
                Arg::Text(a.op.as_str().to_owned()),
                Arg::Json(a.before.clone()),
                Arg::Json(a.after.clone()),
                Arg::Int(to_us(a.at)),
            ],
        );
    }
    Ok(())
}

/// A row of `runs`.
pub(crate) type RunRow = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<Json<Value>>,
    Option<Json<Value>>,
);

pub(crate) fn run_from_row(r: RunRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.0,
        job: r.1,
        status: parse_status(&r.2)?,
        started_at: from_us(r.3)?,
        finished_at: r.4.map(from_us).transpose()?,
        plan: r.5.map(|j| j.0),
        summary: r.6.map(|j| j.0),
    })
}

/// A row of `journal`.
pub(crate) type JournalRow = (
    String,
    i64,
    Json<Op>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
);

pub(crate) fn journal_from_row(r: JournalRow) -> Result<JournalEntry> {
    Ok(JournalEntry {
        run_id: r.0,
        op_index: to_usize(r.1)?,
        op: r.2.0,
        source_anchor: r.3.map(Into::into),
        target_anchor: r.4.map(Into::into),
        state: parse_state(&r.5)?,
        error: r.6,
        at: from_us(r.7)?,
    })
}

/// A row of `audit`.
pub(crate) type AuditRow = (
    String,
    String,
    String,
    String,
    String,
    Option<Json<Value>>,
    Option<Json<Value>>,
    i64,
);

pub(crate) fn audit_from_row(r: AuditRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        run_id: r.0,
        job: r.1,
        kind: parse_kind(&r.2)?,
        anchor: r.3.into(),
        op: r.4.into(),
        before: r.5.map(|j| j.0),
        after: r.6.map(|j| j.0),
        at: from_us(r.7)?,
    })
}

/// A row of `feed`.
pub(crate) type FeedRow = (i64, String, String, Option<Json<Value>>, i64);

pub(crate) fn feed_from_row(r: FeedRow) -> Result<FeedEntry> {
    Ok(FeedEntry {
        seq: u64::try_from(r.0)
            .map_err(|_| idsync_core::Error::invalid_data("store: negative feed sequence"))?,
        kind: parse_kind(&r.1)?,
        anchor: r.2.into(),
        entity: r.3.map(|j| j.0),
        at: from_us(r.4)?,
    })
}

/// A row of `idempotency`.
pub(crate) type IdempotencyRow = (String, String, String, Json<Value>, i64);

pub(crate) fn idempotency_from_row(
    r: IdempotencyRow,
) -> Result<idsync_core::store::IdempotencyRecord> {
    Ok(idsync_core::store::IdempotencyRecord {
        scope: r.0,
        key: r.1,
        request_hash: r.2,
        response: r.3.0,
        at: from_us(r.4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_batches_renumber_parameters() {
        let mut b = Batch::default();
        b.push(
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            vec![Arg::Int(1), Arg::Int(2)],
        );
        b.push(
            "UPDATE u SET x = $2 WHERE y = $1 AND z = $10",
            vec![Arg::Int(3)],
        );
        let out = joined(b);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].0,
            "SAVEPOINT idsync_write;\nINSERT INTO t (a, b) VALUES ($1, $2);\n\
             UPDATE u SET x = $4 WHERE y = $3 AND z = $12;\nRELEASE idsync_write"
        );
        assert_eq!(out[0].1.len(), 3);
        let mut single = Batch::default();
        single.push("DELETE FROM t WHERE a = $1", vec![Arg::Int(1)]);
        assert_eq!(joined(single)[0].0, "DELETE FROM t WHERE a = $1");
    }
}
