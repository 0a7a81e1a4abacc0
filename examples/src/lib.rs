//! Helpers shared by the idsync examples: a bundled sample org chart.
//!
//! [`sample_org_chart`] builds the same 20 departments and 200 people every time (a fixed
//! pseudo-random sequence), with Chinese and English names, some people in two departments,
//! managers, and a few disabled accounts. No real personal data.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use idsync_core::{Account, Anchor, Org, Status};

const CENTERS: [(&str, &str); 4] = [
    ("rd", "研发中心"),
    ("sales", "Sales & Marketing"),
    ("ops", "运营中心"),
    ("corp", "Corporate Functions"),
];

const TEAMS: [(&str, &str, &str); 15] = [
    ("rd-be", "rd", "后端组"),
    ("rd-fe", "rd", "前端组"),
    ("rd-qa", "rd", "测试组"),
    ("rd-infra", "rd", "Infrastructure"),
    ("sales-east", "sales", "华东销售部"),
    ("sales-north", "sales", "华北销售部"),
    ("sales-intl", "sales", "International Sales"),
    ("sales-mkt", "sales", "市场部"),
    ("ops-cs", "ops", "客户服务部"),
    ("ops-supply", "ops", "供应链"),
    ("ops-data", "ops", "Data & Analytics"),
    ("corp-hr", "corp", "人力资源部"),
    ("corp-fin", "corp", "财务部"),
    ("corp-legal", "corp", "Legal"),
    ("corp-it", "corp", "IT 服务台"),
];

const SURNAMES: [(&str, &str); 16] = [
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("黄", "huang"),
    ("赵", "zhao"),
    ("吴", "wu"),
    ("周", "zhou"),
    ("徐", "xu"),
    ("孙", "sun"),
    ("马", "ma"),
    ("朱", "zhu"),
    ("胡", "hu"),
    ("郭", "guo"),
];

const GIVEN: [(&str, &str); 16] = [
    ("伟", "wei"),
    ("芳", "fang"),
    ("娜", "na"),
    ("敏", "min"),
    ("静", "jing"),
    ("磊", "lei"),
    ("洋", "yang"),
    ("艳", "yan"),
    ("勇", "yong"),
    ("军", "jun"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("秀英", "xiuying"),
    ("晓东", "xiaodong"),
];

const ENGLISH: [(&str, &str); 12] = [
    ("Alice", "Johnson"),
    ("Bob", "Smith"),
    ("Carol", "Williams"),
    ("David", "Brown"),
    ("Emma", "Jones"),
    ("Frank", "Miller"),
    ("Grace", "Davis"),
    ("Henry", "García"),
    ("Isabel", "Rodríguez"),
    ("Jack", "Wilson"),
    ("Karen", "Müller"),
    ("Liam", "O'Brien"),
];

const TITLES: [&str; 6] = [
    "工程师",
    "高级工程师",
    "Manager",
    "专员",
    "Analyst",
    "Director",
];

/// A tiny deterministic generator (so the sample is the same on every machine).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// The sample: 20 orgs (a company root, 4 centers, 15 teams) and 200 people.
pub fn sample_org_chart() -> (Vec<Org>, Vec<Account>) {
    let mut orgs = vec![Org::new("company", None, "示例科技有限公司")];
    for (i, (a, n)) in CENTERS.iter().enumerate() {
        let mut o = Org::new(*a, Some("company".into()), *n);
        o.order = Some(i as i64 + 1);
        orgs.push(o);
    }
    for (i, (a, p, n)) in TEAMS.iter().enumerate() {
        let mut o = Org::new(*a, Some(Anchor::from(*p)), *n);
        o.order = Some(i as i64 + 1);
        orgs.push(o);
    }
    let mut rng = Lcg(20_261_127);
    let mut accounts = Vec::with_capacity(200);
    let mut used = std::collections::HashSet::new();
    for i in 0..200usize {
        let anchor = format!("E{:04}", i + 1);
        let team = TEAMS[i % TEAMS.len()];
        let (display, mut user) = if i % 4 == 3 {
            let (f, l) = ENGLISH[rng.next(ENGLISH.len())];
            (
                format!("{f} {l}"),
                format!(
                    "{}.{}",
                    f.to_lowercase(),
                    l.to_lowercase().replace(['\'', 'í', 'ü'], "")
                ),
            )
        } else {
            let (s, sp) = SURNAMES[rng.next(SURNAMES.len())];
            let (g, gp) = GIVEN[rng.next(GIVEN.len())];
            (format!("{s}{g}"), format!("{gp}.{sp}"))
        };
        if !used.insert(user.clone()) {
            user = format!("{user}{}", i + 1);
            used.insert(user.clone());
        }
        let mut a = Account::new(anchor.as_str(), user.as_str());
        a.display_name = Some(display);
        a.email = Some(format!("{}@example.com", user.replace('á', "a")));
        a.employee_id = Some(anchor.clone());
        a.title = Some(TITLES[rng.next(TITLES.len())].to_owned());
        a.phone = (i % 3 != 0).then(|| format!("+86 139{:08}", 10_000_000 + i * 7919 % 89_999_999));
        a.orgs = vec![Anchor::from(team.0)];
        if i % 17 == 5 {
            // a second department
            a.orgs.push(Anchor::from(TEAMS[(i + 4) % TEAMS.len()].0));
        }
        if i >= TEAMS.len() {
            // the first person of each team manages it
            a.manager = Some(Anchor::from(format!("E{:04}", i % TEAMS.len() + 1)));
        }
        if i % 41 == 40 {
            a.status = Status::Disabled;
        }
        accounts.push(a);
    }
    (orgs, accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_valid_and_as_described() {
        let (orgs, accounts) = sample_org_chart();
        assert_eq!(orgs.len(), 20);
        assert_eq!(accounts.len(), 200);
        idsync_core::model::validate(&orgs, &accounts).unwrap();
        assert!(accounts.iter().any(|a| a.orgs.len() == 2));
        assert!(accounts.iter().any(|a| a.status == Status::Disabled));
        assert!(
            accounts
                .iter()
                .any(|a| a.display_name.as_deref().is_some_and(|d| d.is_ascii()))
        );
        assert!(
            accounts
                .iter()
                .any(|a| a.display_name.as_deref().is_some_and(|d| !d.is_ascii()))
        );
        let users: std::collections::HashSet<_> = accounts.iter().map(|a| &a.username).collect();
        assert_eq!(users.len(), 200);
        assert_eq!(sample_org_chart(), (orgs, accounts), "deterministic");
    }
}
