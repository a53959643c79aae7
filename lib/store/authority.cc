// tenantwal: the authority document, its conditional updates, and the probe
// for conditional writes (design in authority.h; format in docs/FORMAT.md,
// "The authority").
#include "store/authority.h"

#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "base/json_quote.h"
#include "base/names.h"
#include "store/format.h"

namespace tw {

namespace {

constexpr const char* kFormatTag = "tenantwal-authority-1";

void Quote(std::string* out, std::string_view s) { JsonQuote(out, s); }

void Str(std::string* out, const char* name, std::string_view v, bool first = false) {
  if (!first) out->push_back(',');
  Quote(out, name);
  out->push_back(':');
  Quote(out, v);
}

void Num(std::string* out, const char* name, int64_t v) {
  out->push_back(',');
  Quote(out, name);
  out->push_back(':');
  out->append(std::to_string(v));
}

void UNum(std::string* out, const char* name, uint64_t v) {
  out->push_back(',');
  Quote(out, name);
  out->push_back(':');
  out->append(std::to_string(v));
}

Status Bad(const std::string& what) { return Status::Corruption("authority: " + what); }

// Field readers: absent, or of another type, is Corruption naming the field.
Status GetStr(simdjson::dom::object o, const char* name, std::string* out) {
  std::string_view v;
  auto e = o[name].get(v);
  if (e == simdjson::NO_SUCH_FIELD) return Bad(std::string("missing field \"") + name + "\"");
  if (e) return Bad(std::string("field \"") + name + "\" must be a string");
  out->assign(v.data(), v.size());
  return Status::OK();
}

Status GetU64(simdjson::dom::object o, const char* name, uint64_t* out) {
  auto e = o[name].get(*out);
  if (e == simdjson::NO_SUCH_FIELD) return Bad(std::string("missing field \"") + name + "\"");
  if (e) return Bad(std::string("field \"") + name + "\" must be a non-negative integer");
  return Status::OK();
}

Status GetI64(simdjson::dom::object o, const char* name, int64_t* out) {
  auto e = o[name].get(*out);
  if (e == simdjson::NO_SUCH_FIELD) return Bad(std::string("missing field \"") + name + "\"");
  if (e) return Bad(std::string("field \"") + name + "\" must be an integer");
  return Status::OK();
}

Status GetBool(simdjson::dom::object o, const char* name, bool* out) {
  auto e = o[name].get(*out);
  if (e == simdjson::NO_SUCH_FIELD) return Bad(std::string("missing field \"") + name + "\"");
  if (e) return Bad(std::string("field \"") + name + "\" must be true or false");
  return Status::OK();
}

}  // namespace

const std::string& Authority::current() const {
  static const std::string kEmpty;
  return lineage.empty() ? kEmpty : lineage.back().id;
}

long Authority::Find(std::string_view id) const {
  for (size_t i = 0; i < lineage.size(); ++i) {
    if (lineage[i].id == id) return long(i);
  }
  return -1;
}

std::string AuthorityKey(const std::string& tenant, const std::string& db) {
  return "tenants/" + tenant + "/" + db + "/authority.json";
}

bool IsHostId(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string SerializeAuthority(const Authority& a) {
  std::string o = "{";
  Str(&o, "format", kFormatTag, true);
  Str(&o, "tenant", a.tenant);
  Str(&o, "db", a.db);
  UNum(&o, "epoch", a.epoch);
  Str(&o, "owner", a.owner);
  Str(&o, "ownerName", a.owner_name);
  o.append(",\"released\":").append(a.released ? "true" : "false");
  UNum(&o, "durableTxid", a.durable_txid);
  Num(&o, "durableCommitUs", a.durable_commit_us);
  Num(&o, "updatedUs", a.updated_us);
  o.append(",\"lineage\":[");
  for (size_t i = 0; i < a.lineage.size(); ++i) {
    const AuthorityGeneration& g = a.lineage[i];
    if (i) o.push_back(',');
    o.append("\n{");
    Str(&o, "id", g.id, true);
    Str(&o, "parent", g.parent);
    UNum(&o, "epoch", g.epoch);
    Str(&o, "host", g.host);
    UNum(&o, "startTxid", g.start_txid);
    Num(&o, "startedUs", g.started_us);
    Str(&o, "reason", g.reason);
    o.push_back('}');
  }
  o.append("]}\n");
  return o;
}

Status ParseAuthority(std::string_view json, Authority* out) {
  *out = Authority{};
  if (json.size() > kAuthorityMaxBytes) {
    return Bad("document of " + std::to_string(json.size()) + " bytes exceeds the limit of " +
               std::to_string(kAuthorityMaxBytes));
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  // simdjson wants SIMDJSON_PADDING readable bytes after the input: copy.
  simdjson::padded_string padded(json.data(), json.size());
  if (auto e = parser.parse(padded).get(root)) {
    return Bad(std::string("not JSON: ") + simdjson::error_message(e));
  }
  simdjson::dom::object o;
  if (root.get(o)) return Bad("not a JSON object");
  std::string format;
  TW_RETURN_IF_ERROR(GetStr(o, "format", &format));
  if (format != kFormatTag) return Bad("unknown format \"" + format.substr(0, 64) + "\"");
  Authority a;
  TW_RETURN_IF_ERROR(GetStr(o, "tenant", &a.tenant));
  TW_RETURN_IF_ERROR(GetStr(o, "db", &a.db));
  if (!ValidName(a.tenant) || !ValidName(a.db)) return Bad("invalid tenant or database name");
  TW_RETURN_IF_ERROR(GetU64(o, "epoch", &a.epoch));
  if (a.epoch < 1) return Bad("epoch must be >= 1");
  TW_RETURN_IF_ERROR(GetStr(o, "owner", &a.owner));
  TW_RETURN_IF_ERROR(GetStr(o, "ownerName", &a.owner_name));
  TW_RETURN_IF_ERROR(GetBool(o, "released", &a.released));
  if (!a.released && !IsHostId(a.owner)) return Bad("owner must be a host id (32 lowercase hex)");
  if (a.released && !a.owner.empty() && !IsHostId(a.owner)) return Bad("bad owner host id");
  if (a.owner_name.size() > 256) return Bad("ownerName longer than 256 bytes");
  TW_RETURN_IF_ERROR(GetU64(o, "durableTxid", &a.durable_txid));
  TW_RETURN_IF_ERROR(GetI64(o, "durableCommitUs", &a.durable_commit_us));
  TW_RETURN_IF_ERROR(GetI64(o, "updatedUs", &a.updated_us));
  simdjson::dom::array lineage;
  {
    auto e = o["lineage"].get(lineage);
    if (e == simdjson::NO_SUCH_FIELD) return Bad("missing field \"lineage\"");
    if (e) return Bad("field \"lineage\" must be an array");
  }
  if (lineage.size() == 0) return Bad("empty lineage");
  if (lineage.size() > kAuthorityMaxGenerations) {
    return Bad("lineage of " + std::to_string(lineage.size()) + " generations exceeds " +
               std::to_string(kAuthorityMaxGenerations));
  }
  std::set<std::string> seen;
  for (simdjson::dom::element el : lineage) {
    simdjson::dom::object go;
    if (el.get(go)) return Bad("lineage entries must be objects");
    AuthorityGeneration g;
    const std::string at = "lineage[" + std::to_string(a.lineage.size()) + "]: ";
    Status s = GetStr(go, "id", &g.id);
    if (s.ok()) s = GetStr(go, "parent", &g.parent);
    if (s.ok()) s = GetU64(go, "epoch", &g.epoch);
    if (s.ok()) s = GetStr(go, "host", &g.host);
    if (s.ok()) s = GetU64(go, "startTxid", &g.start_txid);
    if (s.ok()) s = GetI64(go, "startedUs", &g.started_us);
    if (s.ok()) s = GetStr(go, "reason", &g.reason);
    if (!s.ok()) return Bad(at + s.message().substr(std::string("authority: ").size()));
    if (!IsGenerationId(g.id)) return Bad(at + "bad generation id");
    if (!seen.insert(g.id).second) return Bad(at + "generation " + g.id + " appears twice");
    if (!g.host.empty() && !IsHostId(g.host)) return Bad(at + "bad host id");
    if (g.reason.size() > 256) return Bad(at + "reason longer than 256 bytes");
    if (a.lineage.empty()) {
      if (!g.parent.empty() && !IsGenerationId(g.parent)) return Bad(at + "bad parent id");
    } else if (g.parent != a.lineage.back().id) {
      return Bad(at + "parent " + g.parent.substr(0, 32) + " is not the previous generation " +
                 a.lineage.back().id);
    }
    a.lineage.push_back(std::move(g));
  }
  *out = std::move(a);
  return Status::OK();
}

Status LoadAuthority(ObjectStore* store, const std::string& tenant, const std::string& db,
                     Authority* out, std::string* etag) {
  if (!ValidName(tenant) || !ValidName(db)) {
    return Status::InvalidArgument("invalid tenant or database name");
  }
  const std::string key = AuthorityKey(tenant, db);
  std::string body, tag;
  TW_RETURN_IF_ERROR(store->GetWithEtag(key, &body, &tag));
  Status s = ParseAuthority(body, out);
  if (!s.ok()) return s.Prefix(store->url() + "/" + key);
  if (out->tenant != tenant || out->db != db) {
    return Status::Corruption(store->url() + "/" + key + ": names " + out->tenant + "/" +
                              out->db + ", not " + tenant + "/" + db);
  }
  if (etag) *etag = tag;
  return Status::OK();
}

Status StoreAuthority(ObjectStore* store, const Authority& a, const std::string& expected_etag,
                      std::string* new_etag) {
  if (!ValidName(a.tenant) || !ValidName(a.db)) {
    return Status::InvalidArgument("invalid tenant or database name");
  }
  const std::string body = SerializeAuthority(a);
  {
    // Never write what readers would refuse.
    Authority check;
    TW_RETURN_IF_ERROR(ParseAuthority(body, &check).Prefix("refusing to store an invalid authority"));
  }
  const PutCondition cond =
      expected_etag.empty() ? PutCondition::Absent() : PutCondition::Matches(expected_etag);
  return store->PutIf(AuthorityKey(a.tenant, a.db), body, cond, new_etag,
                      {{"tenantwal-epoch", std::to_string(a.epoch)}});
}

Status UpdateAuthority(ObjectStore* store, const std::string& tenant, const std::string& db,
                       const std::function<Status(const Authority* current, Authority* next)>& update,
                       Authority* result, std::string* etag, int attempts) {
  Status last = Status::Conflict("authority of " + tenant + "/" + db + ": no attempt made");
  for (int i = 0; i < std::max(1, attempts); ++i) {
    Authority cur;
    std::string tag;
    Status ls = LoadAuthority(store, tenant, db, &cur, &tag);
    if (!ls.ok() && !ls.IsNotFound()) return ls;
    const bool exists = ls.ok();
    Authority next;
    Status us = update(exists ? &cur : nullptr, &next);
    if (us.code() == Status::kAborted) {
      if (result) *result = cur;
      if (etag) *etag = tag;
      return Status::OK();
    }
    if (!us.ok()) return us;
    next.tenant = tenant;
    next.db = db;
    std::string new_tag;
    Status ss = StoreAuthority(store, next, exists ? tag : std::string(), &new_tag);
    if (ss.ok()) {
      if (result) *result = next;
      if (etag) *etag = new_tag;
      return Status::OK();
    }
    if (!ss.IsConflict()) return ss;
    last = ss;  // another writer got there first (or our own retried PUT): read again
  }
  return Status::Conflict("authority of " + tenant + "/" + db + ": still contended after " +
                          std::to_string(attempts) + " attempts (" + last.message() + ")");
}

std::vector<AuthorityGeneration> LegacyLineage(const std::vector<std::string>& generation_ids) {
  std::vector<std::string> ids = generation_ids;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<AuthorityGeneration> out;
  for (const std::string& id : ids) {
    AuthorityGeneration g;
    g.id = id;
    g.parent = out.empty() ? "" : out.back().id;
    g.reason = "before the authority (ordered by id)";
    out.push_back(std::move(g));
  }
  return out;
}

Status ProbeConditionalWrites(ObjectStore* store, const std::string& probe_key, bool* enforced) {
  *enforced = false;
  // Create-only twice: a store that honours If-None-Match refuses the second.
  store->Delete(probe_key);
  std::string etag;
  Status s = store->PutIf(probe_key, "probe\n", PutCondition::Absent(), &etag);
  if (s.code() == Status::kInvalidArgument && s.message().find("not supported") != std::string::npos) {
    return Status::OK();  // a store without conditional writes at all
  }
  if (!s.ok()) return s.Prefix("conditional-write probe");
  Status again = store->PutIf(probe_key, "probe again\n", PutCondition::Absent(), &etag);
  store->Delete(probe_key);
  if (again.IsConflict()) {
    *enforced = true;
    return Status::OK();
  }
  if (!again.ok()) return again.Prefix("conditional-write probe");
  return Status::OK();  // accepted: the store ignores If-None-Match
}

}  // namespace tw
