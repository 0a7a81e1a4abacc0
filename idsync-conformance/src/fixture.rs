//! Fixture builders: small directories with Chinese and English names, deep trees and
//! Unicode, used by the suite's cases and available to adapters' own tests.
//!
//! Anchors in fixtures are proposals (`o0`, `a0`, ...). Adapters that assign their own
//! anchors may change them: the suite compares by content (see [`Content`](crate::Content)).

use idsync_core::{Account, Anchor, Directory, Org, Status};

/// Orgs and accounts to seed a namespace with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixture {
    /// The org tree (parents before children).
    pub orgs: Vec<Org>,
    /// The accounts; `orgs` and `manager` refer to anchors of this fixture.
    pub accounts: Vec<Account>,
}

const ZH_ORGS: &[&str] = &[
    "总公司",
    "研发中心",
    "市场部",
    "财务部",
    "人力资源部",
    "产品部",
    "测试组",
    "运维组",
];
const EN_ORGS: &[&str] = &[
    "Engineering",
    "Sales",
    "Support",
    "Legal",
    "Operations",
    "Research",
    "Design",
    "Security",
];
const ZH_NAMES: &[&str] = &[
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强",
];
const EN_NAMES: &[&str] = &[
    "Alice Smith",
    "Bob Jones",
    "Carol White",
    "Dave Brown",
    "Erin Green",
    "Frank Black",
];
const TITLES: &[&str] = &["工程师", "Engineer", "经理", "Manager", "Analyst"];

fn pick<'a>(list: &[&'a str], i: usize) -> &'a str {
    list.get(i % list.len()).copied().unwrap_or("x")
}

/// The anchor of the `i`-th fixture org.
pub fn org_anchor(i: usize) -> Anchor {
    Anchor::from(format!("o{i}"))
}

/// The anchor of the `i`-th fixture account.
pub fn account_anchor(i: usize) -> Anchor {
    Anchor::from(format!("a{i}"))
}

/// A plain account with the fixture's field conventions.
pub fn account(i: usize, orgs: Vec<Anchor>) -> Account {
    let mut a = Account::new(account_anchor(i), format!("user{i:04}"));
    a.display_name = Some(if i % 2 == 0 {
        format!("{}{i}", pick(ZH_NAMES, i / 2))
    } else {
        format!("{} {i}", pick(EN_NAMES, i / 2))
    });
    a.email = Some(format!("user{i:04}@example.com"));
    a.employee_id = Some(format!("E{i:05}"));
    a.title = Some(pick(TITLES, i).to_owned());
    if i % 3 == 0 {
        a.phone = Some(format!("+86 138 0000 {i:04}"));
    }
    a.orgs = orgs;
    a
}

impl Fixture {
    /// Nothing at all.
    pub fn empty() -> Self {
        Fixture::default()
    }

    /// An org chart: `n_orgs` orgs in a tree of fan-out 3 (org `i` under org `(i-1)/3`,
    /// org 0 the root), names alternating Chinese and English; `n_accounts` accounts spread
    /// over the orgs, every fifth also in a second org, everyone but account 0 managed by
    /// account 0. With `n_orgs == 0` accounts are in no org.
    pub fn org_chart(n_orgs: usize, n_accounts: usize) -> Self {
        let orgs: Vec<Org> = (0..n_orgs)
            .map(|i| {
                let name = if i == 0 {
                    "总公司 Headquarters".to_owned()
                } else if i % 2 == 1 {
                    format!("{} {i}", pick(ZH_ORGS, i / 2 + 1))
                } else {
                    format!("{} {i}", pick(EN_ORGS, i / 2))
                };
                let parent = (i > 0).then(|| org_anchor((i - 1) / 3));
                Org::new(org_anchor(i), parent, name)
            })
            .collect();
        let accounts = (0..n_accounts)
            .map(|i| {
                let mut memberships = Vec::new();
                if n_orgs > 0 {
                    memberships.push(org_anchor(i % n_orgs));
                    if i % 5 == 4 && n_orgs > 1 {
                        memberships.push(org_anchor((i + 1) % n_orgs));
                    }
                }
                let mut a = account(i, memberships);
                if i > 0 {
                    a.manager = Some(account_anchor(0));
                }
                a
            })
            .collect();
        Fixture { orgs, accounts }
    }

    /// One root org and `n` accounts in it (page-boundary tests), plus `n - 1` child orgs
    /// so that org listings have `n` entries too.
    pub fn flat(n: usize) -> Self {
        let mut orgs = Vec::new();
        if n > 0 {
            orgs.push(Org::new(org_anchor(0), None, "Flat Root"));
            for i in 1..n {
                orgs.push(Org::new(
                    org_anchor(i),
                    Some(org_anchor(0)),
                    format!("Team {i:03}"),
                ));
            }
        }
        let accounts = (0..n).map(|i| account(i, vec![org_anchor(0)])).collect();
        Fixture { orgs, accounts }
    }

    /// A chain of `depth` orgs, each under the previous one, one account in the deepest
    /// and one in the root.
    pub fn deep(depth: usize) -> Self {
        let orgs: Vec<Org> = (0..depth)
            .map(|i| {
                Org::new(
                    org_anchor(i),
                    (i > 0).then(|| org_anchor(i - 1)),
                    format!("Level {i:02} 层级"),
                )
            })
            .collect();
        let mut accounts = Vec::new();
        if depth > 0 {
            accounts.push(account(0, vec![org_anchor(depth - 1)]));
            accounts.push(account(1, vec![org_anchor(0)]));
        }
        Fixture { orgs, accounts }
    }

    /// Names in several scripts: Chinese, emoji, right-to-left (Arabic, Hebrew), combining
    /// marks, full-width characters. Usernames stay ASCII (most providers insist).
    pub fn unicode() -> Self {
        let names = [
            "研发中心",
            "🚀 Launch Team 🌟",
            "قسم المبيعات",
            "מחלקת תמיכה",
            "Cafe\u{301} Équipe",
            "Ｆｕｌｌ　ｗｉｄｔｈ",
        ];
        let mut orgs = vec![Org::new(org_anchor(0), None, "Unicode 根")];
        for (i, n) in names.iter().enumerate() {
            orgs.push(Org::new(org_anchor(i + 1), Some(org_anchor(0)), *n));
        }
        let people = [
            ("欧阳娜娜", "高级工程师"),
            ("😀 Smiley", "Chief 🎉 Officer"),
            ("محمد علي", "مدير"),
            ("דוד כהן", "מהנדס"),
            ("Zoe\u{308} Ångström", "Ingénieure"),
            ("Ｔａｒｏ　山田", "課長"),
        ];
        let accounts = people
            .iter()
            .enumerate()
            .map(|(i, (name, title))| {
                let mut a = account(i, vec![org_anchor(i + 1)]);
                a.display_name = Some((*name).to_owned());
                a.title = Some((*title).to_owned());
                a
            })
            .collect();
        Fixture { orgs, accounts }
    }

    /// Accounts in several orgs: the first listed is the primary one.
    pub fn multi_org() -> Self {
        let orgs = vec![
            Org::new(org_anchor(0), None, "Multi Root"),
            Org::new(org_anchor(1), Some(org_anchor(0)), "产品 Product"),
            Org::new(org_anchor(2), Some(org_anchor(0)), "Platform 平台"),
            Org::new(org_anchor(3), Some(org_anchor(2)), "Infra"),
        ];
        let accounts = vec![
            account(0, vec![org_anchor(1), org_anchor(2), org_anchor(3)]),
            account(1, vec![org_anchor(3), org_anchor(1)]),
            account(2, vec![org_anchor(2)]),
        ];
        Fixture { orgs, accounts }
    }

    /// The same fixture without orgs (for adapters whose capabilities say `orgs: false`).
    pub fn without_orgs(mut self) -> Self {
        self.orgs.clear();
        for a in &mut self.accounts {
            a.orgs.clear();
        }
        self
    }

    /// Mark an account disabled.
    pub fn disable(mut self, anchor: &Anchor) -> Self {
        if let Some(a) = self.accounts.iter_mut().find(|a| &a.anchor == anchor) {
            a.status = Status::Disabled;
        }
        self
    }

    /// The fixture as an in-memory directory.
    pub fn directory(&self) -> Directory {
        Directory::from_parts(self.orgs.clone(), self.accounts.clone())
    }

    /// The fixture's parts, cloned.
    pub fn parts(&self) -> (Vec<Org>, Vec<Account>) {
        (self.orgs.clone(), self.accounts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_valid_trees() {
        for fx in [
            Fixture::org_chart(13, 30),
            Fixture::flat(7),
            Fixture::deep(20),
            Fixture::unicode(),
            Fixture::multi_org(),
        ] {
            idsync_core::model::validate(&fx.orgs, &fx.accounts).unwrap();
        }
        let chart = Fixture::org_chart(13, 30);
        assert!(chart.accounts.iter().any(|a| a.orgs.len() == 2));
        assert!(
            chart
                .orgs
                .iter()
                .any(|o| o.name.chars().any(|c| c > '\u{4e00}'))
        );
        assert_eq!(Fixture::deep(20).orgs.len(), 20);
    }
}
