//! The schemas this server speaks (RFC 7643 §4 and §8.7): the core User with the enterprise
//! extension, and Group. One table drives `/Schemas`, input checking, attribute-name case
//! folding, filters (`caseExact`) and `attributes` projection (`returned`).

use serde_json::{Map, Value, json};

/// The core User schema URN.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URN.
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The list response message URN.
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The error message URN.
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The PATCH message URN.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The search request message URN.
pub const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// An attribute's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A string.
    String,
    /// `true` / `false`.
    Boolean,
    /// An RFC 3339 timestamp.
    DateTime,
    /// A URI.
    Reference,
    /// Sub-attributes.
    Complex,
    /// Base64.
    Binary,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Boolean => "boolean",
            Type::DateTime => "dateTime",
            Type::Reference => "reference",
            Type::Complex => "complex",
            Type::Binary => "binary",
        }
    }
}

/// Who may write an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Clients read and write it.
    ReadWrite,
    /// The server sets it; clients' values are ignored.
    ReadOnly,
    /// Written, never returned (`password`).
    WriteOnly,
}

/// When an attribute is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always, whatever `attributes` says.
    Always,
    /// Unless excluded.
    Default,
    /// Never.
    Never,
}

/// One attribute of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// The canonical name.
    pub name: &'static str,
    /// The data type.
    pub ty: Type,
    /// Multi-valued.
    pub multi: bool,
    /// String comparisons are case-sensitive.
    pub case_exact: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// When it is returned.
    pub returned: Returned,
    /// Required on create.
    pub required: bool,
    /// Unique server-wide.
    pub unique: bool,
    /// Sub-attributes of a complex attribute.
    pub sub: &'static [Attr],
    /// Canonical values (of `type` sub-attributes).
    pub canonical: &'static [&'static str],
    /// Reference types of a `reference`.
    pub refs: &'static [&'static str],
}

impl Attr {
    /// The sub-attribute `name` (case-insensitive).
    pub fn sub_attr(&self, name: &str) -> Option<&'static Attr> {
        self.sub.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

const fn s(name: &'static str) -> Attr {
    Attr {
        name,
        ty: Type::String,
        multi: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        required: false,
        unique: false,
        sub: &[],
        canonical: &[],
        refs: &[],
    }
}

const fn typed(name: &'static str, ty: Type) -> Attr {
    Attr { ty, ..s(name) }
}

const fn multi(name: &'static str, sub: &'static [Attr]) -> Attr {
    Attr {
        ty: Type::Complex,
        multi: true,
        sub,
        ..s(name)
    }
}

const fn kind(canonical: &'static [&'static str]) -> Attr {
    Attr {
        canonical,
        ..s("type")
    }
}

const PRIMARY: Attr = typed("primary", Type::Boolean);

const NAME_SUB: &[Attr] = &[
    s("formatted"),
    s("familyName"),
    s("givenName"),
    s("middleName"),
    s("honorificPrefix"),
    s("honorificSuffix"),
];
const EMAIL_SUB: &[Attr] = &[
    s("value"),
    s("display"),
    kind(&["work", "home", "other"]),
    PRIMARY,
];
const PHONE_SUB: &[Attr] = &[
    s("value"),
    s("display"),
    kind(&["work", "home", "mobile", "fax", "pager", "other"]),
    PRIMARY,
];
const IM_SUB: &[Attr] = &[
    s("value"),
    s("display"),
    kind(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
    PRIMARY,
];
const PHOTO_SUB: &[Attr] = &[
    Attr {
        refs: &["external"],
        ..typed("value", Type::Reference)
    },
    s("display"),
    kind(&["photo", "thumbnail"]),
    PRIMARY,
];
const ADDRESS_SUB: &[Attr] = &[
    s("formatted"),
    s("streetAddress"),
    s("locality"),
    s("region"),
    s("postalCode"),
    s("country"),
    kind(&["work", "home", "other"]),
    PRIMARY,
];
const READ_ONLY_REF: Attr = Attr {
    mutability: Mutability::ReadOnly,
    ..s("value")
};
const GROUPS_SUB: &[Attr] = &[
    READ_ONLY_REF,
    Attr {
        mutability: Mutability::ReadOnly,
        refs: &["User", "Group"],
        case_exact: true,
        ..typed("$ref", Type::Reference)
    },
    Attr {
        mutability: Mutability::ReadOnly,
        ..s("display")
    },
    Attr {
        mutability: Mutability::ReadOnly,
        canonical: &["direct", "indirect"],
        ..s("type")
    },
];
const PLAIN_SUB: &[Attr] = &[s("value"), s("display"), s("type"), PRIMARY];

/// The core User attributes (without `id`, `externalId`, `meta`).
pub const USER_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        unique: true,
        ..s("userName")
    },
    Attr {
        ty: Type::Complex,
        sub: NAME_SUB,
        ..s("name")
    },
    s("displayName"),
    s("nickName"),
    Attr {
        refs: &["external"],
        ..typed("profileUrl", Type::Reference)
    },
    s("title"),
    s("userType"),
    s("preferredLanguage"),
    s("locale"),
    s("timezone"),
    typed("active", Type::Boolean),
    Attr {
        mutability: Mutability::WriteOnly,
        returned: Returned::Never,
        case_exact: true,
        ..s("password")
    },
    multi("emails", EMAIL_SUB),
    multi("phoneNumbers", PHONE_SUB),
    multi("ims", IM_SUB),
    multi("photos", PHOTO_SUB),
    multi("addresses", ADDRESS_SUB),
    Attr {
        mutability: Mutability::ReadOnly,
        ..multi("groups", GROUPS_SUB)
    },
    multi("entitlements", PLAIN_SUB),
    multi("roles", PLAIN_SUB),
];

const MANAGER_SUB: &[Attr] = &[
    s("value"),
    Attr {
        refs: &["User"],
        case_exact: true,
        ..typed("$ref", Type::Reference)
    },
    Attr {
        mutability: Mutability::ReadOnly,
        ..s("displayName")
    },
];

/// The enterprise extension's attributes.
pub const ENTERPRISE_ATTRS: &[Attr] = &[
    s("employeeNumber"),
    s("costCenter"),
    s("organization"),
    s("division"),
    s("department"),
    Attr {
        ty: Type::Complex,
        sub: MANAGER_SUB,
        ..s("manager")
    },
];

const MEMBER_SUB: &[Attr] = &[
    Attr {
        case_exact: true,
        ..s("value")
    },
    Attr {
        refs: &["User", "Group"],
        case_exact: true,
        ..typed("$ref", Type::Reference)
    },
    Attr {
        mutability: Mutability::ReadOnly,
        ..s("display")
    },
    Attr {
        canonical: &["User", "Group"],
        ..s("type")
    },
];

/// The core Group attributes.
pub const GROUP_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        ..s("displayName")
    },
    multi("members", MEMBER_SUB),
];

/// Attributes every resource has (RFC 7643 §3.1).
pub const COMMON_ATTRS: &[Attr] = &[
    Attr {
        mutability: Mutability::ReadOnly,
        returned: Returned::Always,
        case_exact: true,
        unique: true,
        ..s("id")
    },
    Attr {
        case_exact: true,
        ..s("externalId")
    },
    Attr {
        mutability: Mutability::ReadOnly,
        ty: Type::Complex,
        sub: &[
            Attr {
                case_exact: true,
                ..s("resourceType")
            },
            typed("created", Type::DateTime),
            typed("lastModified", Type::DateTime),
            Attr {
                case_exact: true,
                ..typed("location", Type::Reference)
            },
            Attr {
                case_exact: true,
                ..s("version")
            },
        ],
        ..s("meta")
    },
];

/// A resource type: its endpoint, core schema and extensions.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    /// `User` or `Group`.
    pub name: &'static str,
    /// `/Users` or `/Groups`.
    pub endpoint: &'static str,
    /// The core schema URN.
    pub schema: &'static str,
    /// The core attributes.
    pub attrs: &'static [Attr],
    /// Extensions: (URN, attributes).
    pub extensions: &'static [(&'static str, &'static [Attr])],
}

/// The User resource type.
pub const USER_TYPE: ResourceType = ResourceType {
    name: "User",
    endpoint: "/Users",
    schema: USER,
    attrs: USER_ATTRS,
    extensions: &[(ENTERPRISE, ENTERPRISE_ATTRS)],
};

/// The Group resource type.
pub const GROUP_TYPE: ResourceType = ResourceType {
    name: "Group",
    endpoint: "/Groups",
    schema: GROUP,
    attrs: GROUP_ATTRS,
    extensions: &[],
};

/// Where an attribute lives in a resource's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// At the top level (core and common attributes).
    Core,
    /// Inside the extension object with this URN.
    Extension(&'static str),
}

impl ResourceType {
    /// Find a top-level attribute, core or common, by case-insensitive name.
    pub fn core_attr(&self, name: &str) -> Option<&'static Attr> {
        self.attrs
            .iter()
            .chain(COMMON_ATTRS.iter())
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The extension with this URN (case-insensitive).
    pub fn extension(&self, urn: &str) -> Option<(&'static str, &'static [Attr])> {
        self.extensions
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(urn))
            .copied()
    }

    /// Resolve an attribute path's head: an optional schema URN prefix, then a name.
    /// `urn:...:enterprise:2.0:User:department` → (Extension, department);
    /// `urn:...:core:2.0:User:userName` and `userName` → (Core, userName).
    pub fn resolve(&self, path: &str) -> Option<(Scope, &'static Attr)> {
        if let Some((urn, rest)) = split_urn(path) {
            if urn.eq_ignore_ascii_case(self.schema) {
                return self.core_attr(rest).map(|a| (Scope::Core, a));
            }
            let (u, attrs) = self.extension(urn)?;
            return attrs
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(rest))
                .map(|a| (Scope::Extension(u), a));
        }
        self.core_attr(path).map(|a| (Scope::Core, a))
    }
}

/// Split `urn:…:Schema:attr.sub` into the URN and `attr.sub`, if the path has a URN.
/// The attribute part starts after the last `:` (attribute names have none; URNs carry
/// dots of their own, as in `2.0`).
pub fn split_urn(path: &str) -> Option<(&str, &str)> {
    if !path
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        return None;
    }
    let colon = path.rfind(':')?;
    Some((&path[..colon], &path[colon + 1..]))
}

fn attr_json(a: &Attr) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    m.insert("type".into(), json!(a.ty.as_str()));
    m.insert("multiValued".into(), json!(a.multi));
    m.insert("description".into(), json!(a.name));
    m.insert("required".into(), json!(a.required));
    if !a.canonical.is_empty() {
        m.insert("canonicalValues".into(), json!(a.canonical));
    }
    if a.ty != Type::Complex && a.ty != Type::Boolean {
        m.insert("caseExact".into(), json!(a.case_exact));
    }
    m.insert(
        "mutability".into(),
        json!(match a.mutability {
            Mutability::ReadWrite => "readWrite",
            Mutability::ReadOnly => "readOnly",
            Mutability::WriteOnly => "writeOnly",
        }),
    );
    m.insert(
        "returned".into(),
        json!(match a.returned {
            Returned::Always => "always",
            Returned::Default => "default",
            Returned::Never => "never",
        }),
    );
    m.insert(
        "uniqueness".into(),
        json!(if a.unique { "server" } else { "none" }),
    );
    if !a.refs.is_empty() {
        m.insert("referenceTypes".into(), json!(a.refs));
    }
    if a.ty == Type::Complex {
        m.insert(
            "subAttributes".into(),
            Value::Array(a.sub.iter().map(attr_json).collect()),
        );
    }
    Value::Object(m)
}

fn schema_json(base: &str, id: &str, name: &str, attrs: &[Attr]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": name,
        "attributes": attrs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Schema",
            "location": format!("{base}/Schemas/{id}"),
        },
    })
}

/// Every schema, as `/Schemas` returns them.
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_json(base, USER, "User", USER_ATTRS),
        schema_json(base, GROUP, "Group", GROUP_ATTRS),
        schema_json(base, ENTERPRISE, "EnterpriseUser", ENTERPRISE_ATTRS),
    ]
}

/// Every resource type, as `/ResourceTypes` returns them.
pub fn resource_types(base: &str) -> Vec<Value> {
    [USER_TYPE, GROUP_TYPE]
        .iter()
        .map(|rt| {
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": rt.name,
                "name": rt.name,
                "description": rt.name,
                "endpoint": rt.endpoint,
                "schema": rt.schema,
                "schemaExtensions": rt.extensions.iter()
                    .map(|(u, _)| json!({"schema": u, "required": false}))
                    .collect::<Vec<_>>(),
                "meta": {
                    "resourceType": "ResourceType",
                    "location": format!("{base}/ResourceTypes/{}", rt.name),
                },
            })
        })
        .collect()
}

/// The service provider configuration.
pub fn service_provider_config(base: &str, max_results: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://example.invalid/idsync/scim",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A bearer token issued to the SCIM client (RFC 6750)",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urn_prefixes_split_before_the_attribute() {
        assert_eq!(
            split_urn("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
            Some((ENTERPRISE, "manager.value"))
        );
        assert_eq!(split_urn("name.givenName"), None);
    }

    #[test]
    fn resolve_is_case_insensitive_and_knows_extensions() {
        let (scope, a) = USER_TYPE.resolve("USERNAME").unwrap();
        assert_eq!((scope, a.name), (Scope::Core, "userName"));
        let (scope, a) = USER_TYPE
            .resolve("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:Department")
            .unwrap();
        assert_eq!(
            (scope, a.name),
            (Scope::Extension(ENTERPRISE), "department")
        );
        assert!(USER_TYPE.resolve("shoeSize").is_none());
    }
}
