#!/usr/bin/env python3
"""Generate the quickstart sample data: 20 departments, 200 people (all invented).

Deterministic: run it again and the files are byte-identical. Written as Excel writes
"CSV UTF-8": a UTF-8 BOM and CRLF line ends.

    python3 idsync-csv/data/generate.py
"""
import csv
import io
import os

HERE = os.path.dirname(os.path.abspath(__file__))

ROOT = ("D000", "", "示例科技 Example Tech", 0)
CENTERS = [
    ("D100", "研发中心 R&D"),
    ("D200", "产品中心 Product"),
    ("D300", "销售中心 Sales"),
    ("D400", "职能中心 Operations"),
]
GROUPS = {
    "D100": ["后端组 Backend", "前端组 Frontend", "测试组 QA", "运维组 SRE", "数据组 Data"],
    "D200": ["产品设计 Design", "用户研究 Research", "产品运营 Growth"],
    "D300": ["华东销售 East", "华北销售 North", "华南销售 South", "海外销售 Overseas"],
    "D400": ["人力资源 HR", "财务 Finance", "法务 Legal"],
}

CN_SURNAMES = [("张", "zhang"), ("王", "wang"), ("李", "li"), ("赵", "zhao"), ("刘", "liu"),
               ("陈", "chen"), ("杨", "yang"), ("黄", "huang"), ("周", "zhou"), ("吴", "wu"),
               ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("胡", "hu"), ("郭", "guo")]
CN_GIVEN = [("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"),
            ("磊", "lei"), ("洋", "yang"), ("艳", "yan"), ("勇", "yong"), ("军", "jun"),
            ("杰", "jie"), ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("霞", "xia"),
            ("平", "ping"), ("刚", "gang"), ("桂英", "guiying"), ("建华", "jianhua"),
            ("晓东", "xiaodong"), ("思远", "siyuan"), ("雨欣", "yuxin"), ("子涵", "zihan")]
EN_FIRST = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Iris",
            "Jack", "Karen", "Leo", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Ruby"]
EN_LAST = ["Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Moore", "Clark",
           "Lewis", "Walker", "Hall", "Young", "King", "Wright", "Scott"]


def orgs():
    rows = [ROOT]
    groups = []
    for ci, (cid, cname) in enumerate(CENTERS):
        rows.append((cid, ROOT[0], cname, ci + 1))
        for gi, gname in enumerate(GROUPS[cid]):
            gid = f"D{cid[1]}{gi + 1:02d}"  # D101, D102, ...; D201, ...
            rows.append((gid, cid, gname, gi + 1))
            groups.append((gid, cid))
    assert len(rows) == 20, len(rows)
    return rows, groups


def people(groups):
    out = []
    used = set()
    n = 200
    # person 0 is the CEO (root), 1..4 head the centers, then 15 group leads, then staff.
    center_head = {}
    group_lead = {}
    for i in range(n):
        if i % 3 == 2:
            first, last = EN_FIRST[(i * 7) % len(EN_FIRST)], EN_LAST[(i * 5) % len(EN_LAST)]
            name = f"{first} {last}"
            user = f"{first}.{last}".lower()
        else:
            (s, sp), (g, gp) = CN_SURNAMES[(i * 7) % len(CN_SURNAMES)], CN_GIVEN[(i * 11) % len(CN_GIVEN)]
            name = s + g
            user = f"{sp}.{gp}"
        base, k = user, 2
        while user in used:
            user = f"{base}{k}"
            k += 1
        used.add(user)
        eid = f"E{1001 + i}"
        if i == 0:
            dept, title, manager = ROOT[0], "首席执行官 CEO", ""
        elif i <= 4:
            dept = CENTERS[i - 1][0]
            center_head[dept] = eid
            title, manager = "中心负责人 Head", "E1001"
        elif i <= 19:
            gid, cid = groups[i - 5]
            dept = gid
            group_lead[gid] = eid
            title, manager = "经理 Manager", center_head[cid]
        else:
            gid, cid = groups[(i * 7) % len(groups)]
            dept = gid
            title = ["工程师 Engineer", "高级工程师 Senior Engineer", "专员 Specialist",
                     "顾问 Consultant", "分析师 Analyst"][i % 5]
            manager = group_lead[gid]
        depts = [dept]
        if i > 19 and i % 17 == 0:
            other, _ = groups[(i * 3 + 5) % len(groups)]
            if other != dept:
                depts.append(other)
        status = "离职" if (i > 19 and i % 29 == 0) else "在职"
        out.append((eid, user, name, f"{user}@example.com", f"139{i:08d}", title,
                    ";".join(depts), manager, status))
    return out


def write(path, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))


def main():
    org_rows, groups = orgs()
    write(os.path.join(HERE, "sample-orgs.csv"), ["部门ID", "上级部门ID", "部门名称", "排序"], org_rows)
    write(os.path.join(HERE, "sample-accounts.csv"),
          ["工号", "账号", "姓名", "邮箱", "手机", "职位", "部门", "直属上级", "状态"], people(groups))


if __name__ == "__main__":
    main()
