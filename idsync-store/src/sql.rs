//! The [`Store`](idsync_core::Store) implementation shared by SQLite and PostgreSQL.
//!
//! Both backends run the same SQL (sqlx accepts `$1` placeholders on SQLite too); the
//! macro below is expanded once per backend so every query is type-checked against the
//! concrete driver. A backend type provides `reader()`, `writer()`, `begin_write()` and a
//! `clock` field.
//!
//! `hub_apply` reuses [`Directory::apply`](idsync_core::Directory::apply) for its rules: it
//! loads the rows an op touches (the entity, the parent or orgs it refers to, the parent's
//! ancestor chain for a move, one child and one member for an org delete) into a small
//! `Directory` inside the write transaction, applies the op there, and writes the result
//! back. Errors are therefore exactly those of the in-memory hub.

macro_rules! sql_store {
    ($store:ident, $db:ty, $provider:literal) => {
        impl $store {
            fn err(e: sqlx::Error) -> idsync_core::Error {
                $crate::util::db_err($provider, e)
            }

            /// Load one org into `dir` (if it exists); returns whether it exists.
            async fn load_org(
                tx: &mut sqlx::Transaction<'static, $db>,
                dir: &mut idsync_core::Directory,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<bool> {
                if dir.orgs.contains_key(anchor) {
                    return Ok(true);
                }
                let row: Option<(sqlx::types::Json<idsync_core::Org>,)> =
                    sqlx::query_as("SELECT body FROM hub_orgs WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(&mut **tx)
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
                tx: &mut sqlx::Transaction<'static, $db>,
                dir: &mut idsync_core::Directory,
                from: &idsync_core::Anchor,
            ) -> idsync_core::Result<()> {
                let mut seen = std::collections::HashSet::new();
                let mut cur = Some(from.clone());
                while let Some(a) = cur {
                    if !seen.insert(a.clone()) || !Self::load_org(tx, dir, &a).await? {
                        break;
                    }
                    cur = dir.orgs.get(&a).and_then(|o| o.parent.clone());
                }
                Ok(())
            }

            async fn load_account(
                tx: &mut sqlx::Transaction<'static, $db>,
                dir: &mut idsync_core::Directory,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<()> {
                let row: Option<(sqlx::types::Json<idsync_core::Account>,)> =
                    sqlx::query_as("SELECT body FROM hub_accounts WHERE anchor = $1")
                        .bind(anchor.as_str())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(Self::err)?;
                if let Some((sqlx::types::Json(a),)) = row {
                    dir.accounts.insert(a.anchor.clone(), a);
                }
                Ok(())
            }

            /// Load what `op` touches into a fresh directory.
            async fn load_for(
                tx: &mut sqlx::Transaction<'static, $db>,
                op: &idsync_core::Op,
            ) -> idsync_core::Result<idsync_core::Directory> {
                use idsync_core::{Anchor, Op};
                let mut dir = idsync_core::Directory::new();
                match op {
                    Op::CreateOrg { org } => {
                        Self::load_org(tx, &mut dir, &org.anchor).await?;
                        if let Some(p) = &org.parent {
                            Self::load_org(tx, &mut dir, p).await?;
                        }
                    }
                    Op::UpdateOrg { anchor, .. } => {
                        Self::load_org(tx, &mut dir, anchor).await?;
                    }
                    Op::MoveOrg { anchor, parent } => {
                        Self::load_org(tx, &mut dir, anchor).await?;
                        if let Some(p) = parent {
                            Self::load_chain(tx, &mut dir, p).await?;
                        }
                    }
                    Op::DeleteOrg { anchor } => {
                        Self::load_org(tx, &mut dir, anchor).await?;
                        let child: Option<(sqlx::types::Json<idsync_core::Org>,)> =
                            sqlx::query_as("SELECT body FROM hub_orgs WHERE parent = $1 LIMIT 1")
                                .bind(anchor.as_str())
                                .fetch_optional(&mut **tx)
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
                            .fetch_optional(&mut **tx)
                            .await
                            .map_err(Self::err)?;
                        if let Some((sqlx::types::Json(m),)) = member {
                            dir.accounts.insert(m.anchor.clone(), m);
                        }
                    }
                    Op::CreateAccount { account } => {
                        Self::load_account(tx, &mut dir, &account.anchor).await?;
                        for o in &account.orgs {
                            Self::load_org(tx, &mut dir, o).await?;
                        }
                    }
                    Op::UpdateAccount { anchor, changes } => {
                        Self::load_account(tx, &mut dir, anchor).await?;
                        if let Some(serde_json::Value::Array(orgs)) = changes.get("orgs") {
                            for o in orgs.iter().filter_map(|o| o.as_str()) {
                                Self::load_org(tx, &mut dir, &Anchor::from(o)).await?;
                            }
                        }
                    }
                    Op::DisableAccount { anchor }
                    | Op::EnableAccount { anchor }
                    | Op::DeleteAccount { anchor } => {
                        Self::load_account(tx, &mut dir, anchor).await?;
                    }
                }
                Ok(dir)
            }

            async fn put_memberships(
                tx: &mut sqlx::Transaction<'static, $db>,
                account: &idsync_core::Account,
            ) -> idsync_core::Result<()> {
                for o in &account.orgs {
                    sqlx::query(
                        "INSERT INTO hub_memberships (org, account) VALUES ($1, $2) \
                         ON CONFLICT (org, account) DO NOTHING",
                    )
                    .bind(o.as_str())
                    .bind(account.anchor.as_str())
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::err)?;
                }
                Ok(())
            }

            /// Write the hub entity after `op` back.
            async fn write_back(
                tx: &mut sqlx::Transaction<'static, $db>,
                dir: &idsync_core::Directory,
                op: &idsync_core::Op,
                anchor: &idsync_core::Anchor,
            ) -> idsync_core::Result<()> {
                use idsync_core::{EntityKind, Op};
                use sqlx::types::Json;
                let a = anchor.as_str();
                match op.entity() {
                    EntityKind::Org => match dir.orgs.get(anchor) {
                        Some(org) if op.is_create() => {
                            sqlx::query(
                                "INSERT INTO hub_orgs (anchor, parent, body) VALUES ($1, $2, $3)",
                            )
                            .bind(a)
                            .bind(org.parent.as_ref().map(|p| p.as_str()))
                            .bind(Json(org))
                            .execute(&mut **tx)
                            .await
                            .map_err(Self::err)?;
                        }
                        Some(org) => {
                            sqlx::query(
                                "UPDATE hub_orgs SET parent = $2, body = $3 WHERE anchor = $1",
                            )
                            .bind(a)
                            .bind(org.parent.as_ref().map(|p| p.as_str()))
                            .bind(Json(org))
                            .execute(&mut **tx)
                            .await
                            .map_err(Self::err)?;
                        }
                        None => {
                            sqlx::query("DELETE FROM hub_orgs WHERE anchor = $1")
                                .bind(a)
                                .execute(&mut **tx)
                                .await
                                .map_err(Self::err)?;
                        }
                    },
                    EntityKind::Account => match dir.accounts.get(anchor) {
                        Some(acc) if op.is_create() => {
                            sqlx::query("INSERT INTO hub_accounts (anchor, body) VALUES ($1, $2)")
                                .bind(a)
                                .bind(Json(acc))
                                .execute(&mut **tx)
                                .await
                                .map_err(Self::err)?;
                            Self::put_memberships(tx, acc).await?;
                        }
                        Some(acc) => {
                            sqlx::query("UPDATE hub_accounts SET body = $2 WHERE anchor = $1")
                                .bind(a)
                                .bind(Json(acc))
                                .execute(&mut **tx)
                                .await
                                .map_err(Self::err)?;
                            if matches!(op, Op::UpdateAccount { changes, .. } if changes.contains_key("orgs"))
                            {
                                sqlx::query("DELETE FROM hub_memberships WHERE account = $1")
                                    .bind(a)
                                    .execute(&mut **tx)
                                    .await
                                    .map_err(Self::err)?;
                                Self::put_memberships(tx, acc).await?;
                            }
                        }
                        None => {
                            sqlx::query("DELETE FROM hub_memberships WHERE account = $1")
                                .bind(a)
                                .execute(&mut **tx)
                                .await
                                .map_err(Self::err)?;
                            sqlx::query("DELETE FROM hub_accounts WHERE anchor = $1")
                                .bind(a)
                                .execute(&mut **tx)
                                .await
                                .map_err(Self::err)?;
                        }
                    },
                }
                Ok(())
            }

            /// Write an op record (journal, link, shadow, audit) inside `tx`.
            async fn write_record(
                tx: &mut sqlx::Transaction<'static, $db>,
                rec: &idsync_core::OpRecord,
            ) -> idsync_core::Result<()> {
                use idsync_core::{LinkChange, ShadowChange};
                use sqlx::types::Json;
                use $crate::util::{kind_str, state_str, to_i64, to_us};
                let kind = kind_str(rec.kind);
                match &rec.link {
                    Some(LinkChange::Put { source, target }) => {
                        sqlx::query(
                            "INSERT INTO links (job, kind, source, target) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (job, kind, source) DO UPDATE SET target = excluded.target",
                        )
                        .bind(rec.job.as_str())
                        .bind(kind)
                        .bind(source.as_str())
                        .bind(target.as_str())
                        .execute(&mut **tx)
                        .await
                        .map_err(Self::err)?;
                    }
                    Some(LinkChange::Remove { source }) => {
                        sqlx::query("DELETE FROM links WHERE job = $1 AND kind = $2 AND source = $3")
                            .bind(rec.job.as_str())
                            .bind(kind)
                            .bind(source.as_str())
                            .execute(&mut **tx)
                            .await
                            .map_err(Self::err)?;
                    }
                    None => {}
                }
                match &rec.shadow {
                    Some(ShadowChange::Put { anchor, entity }) => {
                        sqlx::query(
                            "INSERT INTO shadow (job, kind, anchor, entity) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (job, kind, anchor) DO UPDATE SET entity = excluded.entity",
                        )
                        .bind(rec.job.as_str())
                        .bind(kind)
                        .bind(anchor.as_str())
                        .bind(Json(entity))
                        .execute(&mut **tx)
                        .await
                        .map_err(Self::err)?;
                    }
                    Some(ShadowChange::Remove { anchor }) => {
                        sqlx::query("DELETE FROM shadow WHERE job = $1 AND kind = $2 AND anchor = $3")
                            .bind(rec.job.as_str())
                            .bind(kind)
                            .bind(anchor.as_str())
                            .execute(&mut **tx)
                            .await
                            .map_err(Self::err)?;
                    }
                    None => {}
                }
                if let Some(j) = &rec.journal {
                    sqlx::query(
                        "INSERT INTO journal (run_id, op_index, job, op, source_anchor, \
                         target_anchor, state, error, at_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (run_id, op_index) DO UPDATE SET job = excluded.job, \
                         op = excluded.op, source_anchor = excluded.source_anchor, \
                         target_anchor = excluded.target_anchor, state = excluded.state, \
                         error = excluded.error, at_us = excluded.at_us",
                    )
                    .bind(j.run_id.as_str())
                    .bind(to_i64(j.op_index))
                    .bind(rec.job.as_str())
                    .bind(Json(&j.op))
                    .bind(j.source_anchor.as_ref().map(|a| a.as_str()))
                    .bind(j.target_anchor.as_ref().map(|a| a.as_str()))
                    .bind(state_str(j.state))
                    .bind(j.error.as_deref())
                    .bind(to_us(j.at))
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::err)?;
                }
                if let Some(a) = &rec.audit {
                    sqlx::query(
                        "INSERT INTO audit (run_id, job, kind, anchor, op, before, after, at_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(a.run_id.as_str())
                    .bind(a.job.as_str())
                    .bind(kind_str(a.kind))
                    .bind(a.anchor.as_str())
                    .bind(a.op.as_str())
                    .bind(a.before.as_ref().map(Json))
                    .bind(a.after.as_ref().map(Json))
                    .bind(to_us(a.at))
                    .execute(&mut **tx)
                    .await
                    .map_err(Self::err)?;
                }
                Ok(())
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

            async fn hub_apply(
                &self,
                op: &idsync_core::Op,
                record: Option<&idsync_core::OpRecord>,
            ) -> idsync_core::Result<idsync_core::Applied> {
                use sqlx::types::Json;
                let now = self.clock.now();
                let mut tx = self.begin_write().await?;
                // Take the next feed sequence number first: it serializes hub writes.
                let (seq,): (i64,) =
                    sqlx::query_as("UPDATE feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(Self::err)?;
                let mut dir = Self::load_for(&mut tx, op).await?;
                let (applied, change) = dir.apply(op, None)?;
                Self::write_back(&mut tx, &dir, op, &change.anchor).await?;
                sqlx::query(
                    "INSERT INTO feed (seq, kind, anchor, entity, at_us) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(seq)
                .bind($crate::util::kind_str(op.entity()))
                .bind(change.anchor.as_str())
                .bind(change.after.as_ref().map(Json))
                .bind($crate::util::to_us(now))
                .execute(&mut *tx)
                .await
                .map_err(Self::err)?;
                if let Some(rec) = record {
                    let mut rec = rec.clone();
                    if let Some(a) = &mut rec.audit {
                        a.before = change.before;
                        a.after = change.after;
                    }
                    Self::write_record(&mut tx, &rec).await?;
                }
                tx.commit().await.map_err(Self::err)?;
                Ok(applied)
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
                let done = match expected {
                    None => sqlx::query(
                        "INSERT INTO cursors (job, cursor) VALUES ($1, $2) \
                         ON CONFLICT (job) DO NOTHING",
                    )
                    .bind(job)
                    .bind(cursor.0.as_str())
                    .execute(self.writer())
                    .await,
                    Some(e) => sqlx::query(
                        "UPDATE cursors SET cursor = $3 WHERE job = $1 AND cursor = $2",
                    )
                    .bind(job)
                    .bind(e.0.as_str())
                    .bind(cursor.0.as_str())
                    .execute(self.writer())
                    .await,
                }
                .map_err(Self::err)?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(idsync_core::Error::new(
                        idsync_core::ErrorKind::Conflict,
                        format!("the cursor of job {job} moved since it was read"),
                    ))
                }
            }

            async fn put_run(&self, run: &idsync_core::RunRecord) -> idsync_core::Result<()> {
                use sqlx::types::Json;
                use $crate::util::to_us;
                sqlx::query(
                    "INSERT INTO runs (id, job, status, started_us, finished_us, plan, summary) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (id) DO UPDATE SET job = excluded.job, status = excluded.status, \
                     started_us = excluded.started_us, finished_us = excluded.finished_us, \
                     plan = excluded.plan, summary = excluded.summary",
                )
                .bind(run.id.as_str())
                .bind(run.job.as_str())
                .bind(run.status.as_str())
                .bind(to_us(run.started_at))
                .bind(run.finished_at.map(to_us))
                .bind(run.plan.as_ref().map(Json))
                .bind(run.summary.as_ref().map(Json))
                .execute(self.writer())
                .await
                .map_err(Self::err)?;
                Ok(())
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
                use sqlx::types::Json;
                use $crate::util::{state_str, to_i64, to_us};
                sqlx::query(
                    "INSERT INTO journal (run_id, op_index, job, op, source_anchor, \
                     target_anchor, state, error, at_us) \
                     VALUES ($1, $2, COALESCE((SELECT job FROM runs WHERE id = $1), ''), \
                     $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (run_id, op_index) DO UPDATE SET job = excluded.job, \
                     op = excluded.op, source_anchor = excluded.source_anchor, \
                     target_anchor = excluded.target_anchor, state = excluded.state, \
                     error = excluded.error, at_us = excluded.at_us",
                )
                .bind(entry.run_id.as_str())
                .bind(to_i64(entry.op_index))
                .bind(Json(&entry.op))
                .bind(entry.source_anchor.as_ref().map(|a| a.as_str()))
                .bind(entry.target_anchor.as_ref().map(|a| a.as_str()))
                .bind(state_str(entry.state))
                .bind(entry.error.as_deref())
                .bind(to_us(entry.at))
                .execute(self.writer())
                .await
                .map_err(Self::err)?;
                Ok(())
            }

            async fn record(&self, record: &idsync_core::OpRecord) -> idsync_core::Result<()> {
                let mut tx = self.begin_write().await?;
                Self::write_record(&mut tx, record).await?;
                tx.commit().await.map_err(Self::err)
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
                     FROM journal WHERE job = $1 AND state = 'intent' ORDER BY at_us, op_index",
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

            async fn acquire_lease(
                &self,
                job: &str,
                holder: &str,
                ttl: std::time::Duration,
            ) -> idsync_core::Result<bool> {
                let now = self.clock.now();
                let ttl = chrono::Duration::from_std(ttl)
                    .map_err(|_| idsync_core::Error::config("lease ttl out of range"))?;
                let until = now
                    .checked_add_signed(ttl)
                    .ok_or_else(|| idsync_core::Error::config("lease ttl out of range"))?;
                let done = sqlx::query(
                    "INSERT INTO leases (job, holder, until_us) VALUES ($1, $2, $3) \
                     ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
                     until_us = excluded.until_us \
                     WHERE leases.holder = excluded.holder OR leases.until_us <= $4",
                )
                .bind(job)
                .bind(holder)
                .bind($crate::util::to_us(until))
                .bind($crate::util::to_us(now))
                .execute(self.writer())
                .await
                .map_err(Self::err)?;
                Ok(done.rows_affected() >= 1)
            }

            async fn release_lease(&self, job: &str, holder: &str) -> idsync_core::Result<()> {
                sqlx::query("DELETE FROM leases WHERE job = $1 AND holder = $2")
                    .bind(job)
                    .bind(holder)
                    .execute(self.writer())
                    .await
                    .map_err(Self::err)?;
                Ok(())
            }
        }
    };
}

pub(crate) use sql_store;

use idsync_core::{AuditEntry, FeedEntry, JournalEntry, Op, Result, RunRecord};
use serde_json::Value;
use sqlx::types::Json;

use crate::util::{from_us, parse_kind, parse_state, parse_status, to_usize};

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
        op: r.4,
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
