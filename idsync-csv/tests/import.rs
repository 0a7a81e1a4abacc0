//! Reading: encodings, delimiters, layouts, row errors with their lines, policies, paging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use idsync_core::{
    Account, Anchor, Engine, ErrorKind, Hub, Job, MemoryAdapter, MemoryStore, Org, PageRequest,
    Source, SourceExt, Status, Store,
};
use idsync_csv::{
    AccountColumns, CsvConfig, CsvSource, OrgLayout, RowError, RowErrorKind, sample_source,
};

const ORGS: &str = "id,parent_id,name,order\r\n\
r,,示例科技,0\r\n\
rd,r,研发中心,1\r\n\
be,rd,\"后端组, Backend\",2\r\n";

const ACCOUNTS: &str = "id,username,display_name,email,departments,manager,status\r\n\
u1,zhang.san,张三,zhang.san@example.com,\"be;rd\",,在职\r\n\
u2,li.si,\"李四\r\n(second line)\",li.si@example.com,rd,u1,active\r\n\
u3,bob,\"Bob \"\"the builder\"\"\",bob@example.com,r,u1,离职\r\n";

struct Files {
    _dir: tempfile::TempDir,
    orgs: PathBuf,
    accounts: PathBuf,
}

fn files(orgs: &[u8], accounts: &[u8]) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("orgs.csv");
    let a = dir.path().join("accounts.csv");
    std::fs::write(&o, orgs).unwrap();
    std::fs::write(&a, accounts).unwrap();
    Files {
        _dir: dir,
        orgs: o,
        accounts: a,
    }
}

fn cfg(f: &Files) -> CsvConfig {
    CsvConfig::new(&f.accounts, Some(f.orgs.clone()))
}

async fn all(src: &CsvSource) -> (Vec<Org>, Vec<Account>) {
    let o: Vec<Org> = src.org_stream(None).try_collect().await.unwrap();
    let a: Vec<Account> = src.account_stream(None).try_collect().await.unwrap();
    (o, a)
}

fn utf16le(s: &str) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFE];
    for u in s.encode_utf16() {
        v.extend_from_slice(&u.to_le_bytes());
    }
    v
}

fn gb(s: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(s).0.into_owned()
}

fn bom(s: &str) -> Vec<u8> {
    let mut v = b"\xEF\xBB\xBF".to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn check_content(orgs: &[Org], accounts: &[Account]) {
    assert_eq!(orgs.len(), 3);
    assert_eq!(orgs[2].name, "后端组, Backend");
    assert_eq!(orgs[2].parent.as_ref().map(Anchor::as_str), Some("rd"));
    assert_eq!(orgs[2].order, Some(2));
    assert_eq!(accounts.len(), 3);
    let u1 = &accounts[0];
    assert_eq!(u1.display_name.as_deref(), Some("张三"));
    assert_eq!(u1.orgs, vec![Anchor::from("be"), Anchor::from("rd")]);
    assert_eq!(u1.status, Status::Active);
    assert_eq!(
        accounts[1].display_name.as_deref(),
        Some("李四\r\n(second line)")
    );
    assert_eq!(accounts[1].manager.as_ref().map(Anchor::as_str), Some("u1"));
    assert_eq!(
        accounts[2].display_name.as_deref(),
        Some("Bob \"the builder\"")
    );
    assert_eq!(accounts[2].status, Status::Disabled);
}

#[tokio::test]
async fn every_encoding_reads_the_same() {
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("utf-8", ORGS.into(), ACCOUNTS.into(), "UTF-8"),
        ("utf-8 bom", bom(ORGS), bom(ACCOUNTS), "UTF-8"),
        ("gb18030", gb(ORGS), gb(ACCOUNTS), "gb18030"),
        ("utf-16le bom", utf16le(ORGS), utf16le(ACCOUNTS), "UTF-16LE"),
    ];
    for (what, o, a, _name) in cases {
        let f = files(&o, &a);
        let src = CsvSource::open(cfg(&f)).unwrap();
        assert!(
            src.row_errors().is_empty(),
            "{what}: {:?}",
            src.row_errors()
        );
        let (orgs, accounts) = all(&src).await;
        check_content(&orgs, &accounts);
        // pages of one resume correctly from their tokens in every encoding
        let one: Vec<Account> = src.account_stream(Some(1)).try_collect().await.unwrap();
        assert_eq!(one, accounts, "{what}");
    }
}

#[tokio::test]
async fn encoding_override_and_delimiters() {
    // GBK forced by label (detection would also find it).
    let f = files(&gb(ORGS), &gb(ACCOUNTS));
    let src = CsvSource::open(cfg(&f).with_encoding("gbk")).unwrap();
    let (o, a) = all(&src).await;
    check_content(&o, &a);

    // Forcing UTF-8 on GB18030 bytes reports encoding errors on the rows that have them.
    let src = CsvSource::open(cfg(&f).with_encoding("utf-8").with_errors(100, false)).unwrap();
    assert!(
        src.row_errors()
            .iter()
            .any(|e| e.kind == RowErrorKind::Encoding && e.line == 2)
    );

    // Semicolons and tabs are detected from the header line.
    for d in [";", "\t"] {
        let conv = |s: &str| {
            // Only this test data: no delimiter inside quotes except the org name.
            s.replace(",", d)
                .replace(&format!("后端组{d} Backend"), "后端组, Backend")
        };
        let f = files(conv(ORGS).as_bytes(), conv(ACCOUNTS).as_bytes());
        let src = CsvSource::open(cfg(&f)).unwrap();
        let (o, a) = all(&src).await;
        check_content(&o, &a);
    }

    // An override wins over detection: the header has more commas than semicolons.
    // (The override applies to both files.)
    let f = files(
        b"id;name\r\nr;Root\r\n",
        b"id;username;display_name\r\nu1;a;Smith, John, Jr.\r\n",
    );
    let src = CsvSource::open(cfg(&f).with_delimiter(';')).unwrap();
    let (_, a) = all(&src).await;
    assert_eq!(a[0].display_name.as_deref(), Some("Smith, John, Jr."));
}

#[tokio::test]
async fn chinese_headers_and_configured_columns() {
    let f = files(
        "部门ID,上级部门ID,部门名称,排序\n1,,总部,1\n2,1,研发,2\n".as_bytes(),
        "工号,姓名,部门,状态,成本中心\nE01,王五,2,离职,CC-9\n".as_bytes(),
    );
    let src = CsvSource::open(cfg(&f)).unwrap();
    let (o, a) = all(&src).await;
    assert_eq!(o.len(), 2);
    assert_eq!(a[0].anchor.as_str(), "E01");
    assert_eq!(a[0].username, "E01", "no username column: the key");
    assert_eq!(a[0].employee_id.as_deref(), Some("E01"));
    assert_eq!(a[0].display_name.as_deref(), Some("王五"));
    assert_eq!(a[0].status, Status::Disabled);
    assert_eq!(a[0].attrs["成本中心"], "CC-9");

    // Custom names: the key is 员工编号, departments in 所属部门.
    let f = files(
        ORGS.as_bytes(),
        "员工编号,登录名,所属部门\nX1,x,rd\n".as_bytes(),
    );
    let mut c = cfg(&f);
    c.account_columns = AccountColumns {
        anchor: vec!["员工编号".into()],
        username: vec!["登录名".into()],
        orgs: vec!["所属部门".into()],
        ..AccountColumns::default()
    };
    let src = CsvSource::open(c).unwrap();
    let (_, a) = all(&src).await;
    assert_eq!(a[0].anchor.as_str(), "X1");
    assert_eq!(a[0].orgs, vec![Anchor::from("rd")]);

    // Without a key column, open fails with a configuration error naming the file.
    let f = files(ORGS.as_bytes(), b"name,email\nx,x@example.com\n");
    let err = CsvSource::open(cfg(&f)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.to_string().contains("accounts.csv:1"), "{err}");
}

#[tokio::test]
async fn path_layout_derives_stable_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("people.csv");
    std::fs::write(
        &a,
        "id,username,部门路径\n\
         u1,a,示例科技/研发中心/后端组\n\
         u2,b, 示例科技 / 研发中心 ;示例科技/产品中心\n",
    )
    .unwrap();
    let mut c = CsvConfig::new(&a, None).with_layout(OrgLayout::Paths);
    c.account_columns.orgs = vec!["部门路径".into()];
    let src = CsvSource::open(c.clone()).unwrap();
    assert!(src.capabilities().orgs);
    let (orgs, accounts) = all(&src).await;
    let anchors: Vec<&str> = orgs.iter().map(|o| o.anchor.as_str()).collect();
    assert_eq!(
        anchors,
        vec![
            "示例科技",
            "示例科技/产品中心",
            "示例科技/研发中心",
            "示例科技/研发中心/后端组"
        ]
    );
    let be = &orgs[3];
    assert_eq!(be.name, "后端组");
    assert_eq!(
        be.parent.as_ref().map(Anchor::as_str),
        Some("示例科技/研发中心")
    );
    assert_eq!(
        accounts[1].orgs,
        vec![
            Anchor::from("示例科技/研发中心"),
            Anchor::from("示例科技/产品中心")
        ]
    );
    idsync_core::model::validate(&orgs, &accounts).unwrap();

    // A path org file with a custom separator; ancestors are implied.
    let o = dir.path().join("orgs.csv");
    std::fs::write(&o, "path,order\nHQ > Sales > East,3\n").unwrap();
    std::fs::write(&a, "id,username,departments\nu1,a,HQ > Sales > East\n").unwrap();
    let mut c = CsvConfig::new(&a, Some(o)).with_layout(OrgLayout::Paths);
    c.path_separator = " > ".into();
    let src = CsvSource::open(c).unwrap();
    let (orgs, accounts) = all(&src).await;
    assert_eq!(orgs.len(), 3);
    assert!(
        orgs.iter()
            .any(|o| o.anchor.as_str() == "HQ > Sales" && o.name == "Sales")
    );
    assert_eq!(accounts[0].orgs, vec![Anchor::from("HQ > Sales > East")]);
}

fn find(errs: &[RowError], kind: RowErrorKind) -> &RowError {
    errs.iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} in {errs:#?}"))
}

#[tokio::test]
async fn each_row_error_names_file_line_and_column() {
    // Line 3 holds a quoted cell spanning two lines, so every later record starts one
    // physical line further than its record number suggests; line 5 is blank.
    let orgs = "id,parent_id,name\n\
                r,,Root\n\
                a,b,A\n\
                b,c,B\n\
                c,a,C\n\
                x,nowhere,X\n\
                ,r,NoKey\n\
                r,,Root again\n";
    let accounts = "id,username,email,departments,manager,status\n\
                    u1,a,a@example.com,r,,active\n\
                    u2,b,\"b@example.com\",r,u1,\"multi\nline\"\n\
                    \n\
                    ,nokey,c@example.com,r,,\n\
                    u1,dup,d@example.com,r,,\n\
                    u5,e,not-an-email,r,,\n\
                    u6,f,f@example.com,ghost,,\n\
                    u7,g,g@example.com,r,nobody,\n\
                    u8,,h@example.com,r,,\n\
                    u9,i,i@example.com,r,,maybe\n\
                    u10,j,j@example.com,r,,active\n";
    let f = files(orgs.as_bytes(), accounts.as_bytes());
    let src = CsvSource::open(cfg(&f).with_errors(100, false)).unwrap();
    let errs = src.row_errors();
    let name = |p: &Path| p.display().to_string();

    let e = find(errs, RowErrorKind::Cycle);
    assert_eq!((e.file.clone(), e.line), (name(&f.orgs), 3));
    assert!(e.message.contains("lines 3, 4, 5"), "{e}");
    let e = find(errs, RowErrorKind::UnknownParent);
    assert_eq!(e.line, 6);
    assert_eq!(e.column.as_deref(), Some("parent_id"));
    let e = errs
        .iter()
        .find(|e| e.kind == RowErrorKind::MissingKey && e.file == name(&f.orgs))
        .unwrap();
    assert_eq!(e.line, 7);
    let e = errs
        .iter()
        .find(|e| e.kind == RowErrorKind::DuplicateAnchor && e.file == name(&f.orgs))
        .unwrap();
    assert_eq!(e.line, 8);
    assert!(e.message.contains("line 2"), "{e}");

    // u2's status cell "multi\nline" is bad; the record starts on line 3.
    let e = find(errs, RowErrorKind::InvalidStatus);
    assert_eq!(e.line, 3, "{e}");
    let acc = |kind| {
        errs.iter()
            .find(|e| e.kind == kind && e.file == name(&f.accounts))
            .unwrap_or_else(|| panic!("no {kind:?} in {errs:#?}"))
    };
    let e = acc(RowErrorKind::MissingKey);
    assert_eq!((e.line, e.column.as_deref()), (6, Some("id")));
    let e = acc(RowErrorKind::DuplicateAnchor);
    assert_eq!(e.line, 7);
    assert!(e.message.contains("line 2"), "{e}");
    let e = acc(RowErrorKind::MalformedEmail);
    assert_eq!((e.line, e.column.as_deref()), (8, Some("email")));
    assert!(
        e.to_string().contains("accounts.csv:8: column \"email\""),
        "{e}"
    );
    let e = acc(RowErrorKind::UnknownDepartment);
    assert_eq!((e.line, e.column.as_deref()), (9, Some("departments")));
    let e = acc(RowErrorKind::MissingValue);
    assert_eq!((e.line, e.column.as_deref()), (11, Some("username")));
    let e = errs
        .iter()
        .filter(|e| e.kind == RowErrorKind::InvalidStatus)
        .nth(1)
        .unwrap();
    assert_eq!(e.line, 12);
    let w = find(src.warnings(), RowErrorKind::UnknownManager);
    assert_eq!((w.line, w.column.as_deref()), (10, Some("manager")));
    assert_eq!(src.error_count(), errs.len());

    // The policy tolerated them: good rows are all there, bad ones skipped.
    let (o, a) = all(&src).await;
    let orgs: Vec<&str> = o.iter().map(|o| o.anchor.as_str()).collect();
    assert_eq!(orgs, vec!["r"]);
    let ids: Vec<&str> = a.iter().map(|a| a.anchor.as_str()).collect();
    assert_eq!(ids, vec!["u1", "u7", "u10"]);
}

#[tokio::test]
async fn unterminated_quote_and_malformed_path() {
    let f = files(
        ORGS.as_bytes(),
        b"id,username,display_name\nu1,a,ok\nu2,b,\"never closed\nu3,c,swallowed\n",
    );
    let src = CsvSource::open(cfg(&f).with_errors(5, false)).unwrap();
    let e = find(src.row_errors(), RowErrorKind::UnterminatedQuote);
    assert_eq!(e.line, 3);
    let (_, a) = all(&src).await;
    assert_eq!(a.len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "id,departments\nu1,a//b\nu2,a/b\n").unwrap();
    let src = CsvSource::open(
        CsvConfig::new(&p, None)
            .with_layout(OrgLayout::Paths)
            .with_errors(1, false),
    )
    .unwrap();
    let e = find(src.row_errors(), RowErrorKind::MalformedPath);
    assert_eq!((e.line, e.column.as_deref()), (2, Some("departments")));
}

#[tokio::test]
async fn past_max_errors_nothing_is_planned_nor_disabled() {
    // A hub that already holds three accounts from this job.
    let f = files(ORGS.as_bytes(), ACCOUNTS.as_bytes());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let job = Job::new(
        "csv",
        Arc::new(CsvSource::open(cfg(&f)).unwrap()),
        hub.clone(),
    );
    let first = engine.run(&job).await.unwrap();
    assert_eq!(first.counts.failed, 0);

    // Now two of three rows are broken (bad email on line 3, line 5 has no key).
    std::fs::write(
        &f.accounts,
        "id,username,display_name,email,departments,manager,status\n\
         u1,zhang.san,张三,zhang.san@example.com,\"be;rd\",,在职\n\
         u2,li.si,李四,li.si@,rd,u1,active\n\
         \n\
         ,bob,Bob,bob@example.com,r,u1,离职\n",
    )
    .unwrap();
    let src = CsvSource::open(cfg(&f).with_errors(1, false)).unwrap();
    assert_eq!(src.error_count(), 2);
    let err = src.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.message().contains("accounts.csv:3:"), "{err}");
    let err = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    let err = src.orgs(PageRequest::first()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);

    let job = Job::new("csv", Arc::new(src), hub.clone());
    let err = engine.plan(&job).await.unwrap_err();
    assert!(err.to_string().contains("accounts.csv:3:"), "{err}");
    let err = engine.run(&job).await.unwrap_err();
    assert!(err.to_string().contains("import aborted"), "{err}");
    let accounts: Vec<Account> = hub.account_stream(None).try_collect().await.unwrap();
    assert_eq!(accounts.len(), 3);
    assert!(
        accounts
            .iter()
            .all(|a| a.anchor.as_str() != "u3" || a.status == Status::Disabled)
    );
    assert_eq!(
        accounts
            .iter()
            .filter(|a| a.status == Status::Disabled)
            .count(),
        1,
        "only u3, disabled in the file itself"
    );

    // Strict: one warning is enough.
    std::fs::write(&f.accounts, "id,username,manager\nu1,a,\nu2,b,ghost\n").unwrap();
    let src = CsvSource::open(cfg(&f)).unwrap();
    assert!(src.check().await.is_ok(), "a warning alone does not abort");
    let src = CsvSource::open(cfg(&f).with_errors(10, true)).unwrap();
    let err = src.check().await.unwrap_err();
    assert!(err.message().contains("accounts.csv:3:"), "{err}");
    assert!(err.message().contains("strict"), "{err}");
}

#[tokio::test]
async fn within_the_policy_valid_rows_are_imported() {
    let f = files(
        ORGS.as_bytes(),
        b"id,username,email\nu1,a,a@example.com\nu2,b,broken\nu3,c,c@example.com\n",
    );
    let src = Arc::new(CsvSource::open(cfg(&f).with_errors(1, false)).unwrap());
    assert_eq!(src.row_errors().len(), 1);
    assert_eq!(src.account_count(), 2);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let report = engine
        .run(&Job::new("csv", src.clone(), hub.clone()))
        .await
        .unwrap();
    assert_eq!(report.counts.failed, 0);
    let accounts: Vec<Account> = hub.account_stream(None).try_collect().await.unwrap();
    let ids: Vec<&str> = accounts.iter().map(|a| a.anchor.as_str()).collect();
    assert_eq!(ids, vec!["u1", "u3"]);
}

#[tokio::test]
async fn pages_resume_from_tokens_across_instances() {
    let mut text = String::from("id,username,display_name\r\n");
    for i in 0..103 {
        if i % 10 == 3 {
            text.push_str(&format!("u{i:03},n{i},\"two\r\nlines\"\r\n\r\n"));
        } else {
            text.push_str(&format!("u{i:03},n{i},名字{i}\r\n"));
        }
    }
    for (what, bytes) in [("gb18030", gb(&text)), ("utf-16le", utf16le(&text))] {
        let f = files(ORGS.as_bytes(), &bytes);
        let src = CsvSource::open(cfg(&f)).unwrap();
        let p1 = src.accounts(PageRequest::sized(10)).await.unwrap();
        assert_eq!(p1.items.len(), 10, "{what}");
        let token = p1.next.clone().unwrap();
        // A new source (say, after a restart) continues from the token.
        let again = CsvSource::open(cfg(&f)).unwrap();
        let mut req = PageRequest {
            token: Some(token),
            size: Some(10),
        };
        let mut seen: Vec<Account> = p1.items;
        let mut pages = 1;
        loop {
            let p = again.accounts(req.clone()).await.unwrap();
            seen.extend(p.items);
            pages += 1;
            match p.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen.len(), 103, "{what}");
        assert_eq!(
            pages, 11,
            "{what}: 103 rows in pages of 10, no trailing empty page"
        );
        assert_eq!(seen[13].display_name.as_deref(), Some("two\r\nlines"));
        assert_eq!(seen[102].anchor.as_str(), "u102");
        // Exact multiples end without an empty page.
        let p = src.accounts(PageRequest::sized(103)).await.unwrap();
        assert!(p.next.is_none());
    }
    // A token that points nowhere is rejected.
    let f = files(ORGS.as_bytes(), ACCOUNTS.as_bytes());
    let src = CsvSource::open(cfg(&f)).unwrap();
    let err = src
        .accounts(PageRequest {
            token: Some(idsync_core::PageToken("999999:3".into())),
            size: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_file_changed_after_validation_is_not_read_on() {
    let f = files(ORGS.as_bytes(), ACCOUNTS.as_bytes());
    let src = CsvSource::open(cfg(&f)).unwrap();
    std::fs::write(
        &f.accounts,
        format!("{ACCOUNTS}u4,d,D,d@example.com,r,,\r\n"),
    )
    .unwrap();
    let err = src.accounts(PageRequest::first()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn sample_data_is_clean_and_complete() {
    let src = sample_source().unwrap();
    assert!(src.row_errors().is_empty(), "{:?}", src.row_errors());
    assert!(src.warnings().is_empty(), "{:?}", src.warnings());
    let (orgs, accounts) = all(&src).await;
    assert_eq!(orgs.len(), 20);
    assert_eq!(orgs.iter().filter(|o| o.parent.is_none()).count(), 1);
    assert_eq!(accounts.len(), 200);
    assert!(accounts.iter().any(|a| a.orgs.len() == 2));
    assert!(accounts.iter().any(|a| a.status == Status::Disabled));
    assert!(accounts.iter().filter(|a| a.manager.is_some()).count() >= 190);
    assert!(
        accounts
            .iter()
            .any(|a| a.display_name.as_deref().is_some_and(|n| !n.is_ascii()))
    );
    assert!(
        accounts
            .iter()
            .any(|a| a.display_name.as_deref().is_some_and(|n| n.is_ascii()))
    );
    idsync_core::model::validate(&orgs, &accounts).unwrap();
    let depth = |o: &Org| {
        let mut d = 0;
        let mut cur = o.parent.clone();
        while let Some(p) = cur {
            cur = orgs.iter().find(|x| x.anchor == p).unwrap().parent.clone();
            d += 1;
        }
        d
    };
    assert_eq!(
        orgs.iter().map(depth).max(),
        Some(2),
        "root + 2 levels = 3-level tree"
    );
    // The bytes are as Excel writes them.
    let raw = std::fs::read(&src.config().accounts).unwrap();
    assert!(raw.starts_with(b"\xEF\xBB\xBF"));
    assert!(raw.windows(2).any(|w| w == b"\r\n"));

    // And it imports into a hub.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(store.clone());
    let job = Job::new("sample", Arc::new(src), Arc::new(Hub::new(store)));
    let report = engine.run(&job).await.unwrap();
    assert_eq!(report.counts.failed, 0);
    assert_eq!(report.counts.applied, 220);
    let _ = MemoryAdapter::new("unused");
}
