// tenantwal: AWS Signature Version 4 (see sigv4.h for the design and the
// algorithm's sources). Hashing is OpenSSL's EVP/HMAC; everything else is
// plain string work.

#include "store/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <ctime>

namespace tw::sigv4 {

namespace {

bool Unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}

char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// SigV4 "Trimall": strip leading/trailing spaces and tabs, collapse every
// inner run of spaces to a single space.
std::string TrimAll(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && (v[b] == ' ' || v[b] == '\t')) b++;
  while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
  std::string out;
  out.reserve(e - b);
  bool prev_space = false;
  for (size_t i = b; i < e; i++) {
    char c = v[i];
    if (c == ' ') {
      if (!prev_space) out.push_back(' ');
      prev_space = true;
    } else {
      out.push_back(c);
      prev_space = false;
    }
  }
  return out;
}

}  // namespace

std::string HexEncode(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.resize(bytes.size() * 2);
  for (size_t i = 0; i < bytes.size(); i++) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    out[2 * i] = kHex[c >> 4];
    out[2 * i + 1] = kHex[c & 0xf];
  }
  return out;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(md), len));
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3 / 2);
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (Unreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string CanonicalUri(std::string_view path) {
  if (path.empty()) return "/";
  return UriEncode(path, /*keep_slash=*/true);
}

std::string CanonicalQueryString(const std::vector<QueryParam>& params) {
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(params.size());
  for (const auto& [k, v] : params) enc.emplace_back(UriEncode(k, false), UriEncode(v, false));
  std::sort(enc.begin(), enc.end());
  std::string out;
  for (const auto& [k, v] : enc) {
    if (!out.empty()) out.push_back('&');
    out += k;
    out.push_back('=');
    out += v;
  }
  return out;
}

void CanonicalHeaders(const std::vector<std::pair<std::string, std::string>>& headers,
                      std::string* canonical, std::string* signed_names) {
  std::vector<std::pair<std::string, std::string>> lowered;
  lowered.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    std::string n(name);
    std::transform(n.begin(), n.end(), n.begin(), LowerAscii);
    lowered.emplace_back(std::move(n), TrimAll(value));
  }
  // Stable: repeated names keep their order of appearance when joined.
  std::stable_sort(lowered.begin(), lowered.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  canonical->clear();
  signed_names->clear();
  for (size_t i = 0; i < lowered.size(); i++) {
    if (i > 0 && lowered[i].first == lowered[i - 1].first) {
      // Same header again: append ",value" to the previous line.
      canonical->pop_back();  // the '\n'
      canonical->push_back(',');
      *canonical += lowered[i].second;
      canonical->push_back('\n');
      continue;
    }
    *canonical += lowered[i].first;
    canonical->push_back(':');
    *canonical += lowered[i].second;
    canonical->push_back('\n');
    if (!signed_names->empty()) signed_names->push_back(';');
    *signed_names += lowered[i].first;
  }
}

std::string CanonicalRequest(const Request& req) {
  std::string headers, signed_names;
  CanonicalHeaders(req.headers, &headers, &signed_names);
  std::string out;
  out += req.method;
  out += '\n';
  out += CanonicalUri(req.path);
  out += '\n';
  out += CanonicalQueryString(req.query);
  out += '\n';
  out += headers;  // each line already ends in '\n'
  out += '\n';
  out += signed_names;
  out += '\n';
  out += req.payload_sha256_hex;
  return out;
}

std::string AmzDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return std::string(buf, n);
}

std::string CredentialScope(std::string_view amz_date, std::string_view region,
                            std::string_view service) {
  std::string out(amz_date.substr(0, 8));
  out += '/';
  out += region;
  out += '/';
  out += service;
  out += "/aws4_request";
  return out;
}

std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request) {
  std::string out = "AWS4-HMAC-SHA256\n";
  out += amz_date;
  out += '\n';
  out += scope;
  out += '\n';
  out += Sha256Hex(canonical_request);
  return out;
}

std::string SigningKey(std::string_view secret_access_key, std::string_view amz_date,
                       std::string_view region, std::string_view service) {
  std::string k = "AWS4";
  k += secret_access_key;
  std::string k_date = HmacSha256(k, amz_date.substr(0, 8));
  std::string k_region = HmacSha256(k_date, region);
  std::string k_service = HmacSha256(k_region, service);
  return HmacSha256(k_service, "aws4_request");
}

Signed Sign(const Request& req, std::string_view access_key_id,
            std::string_view secret_access_key, std::string_view amz_date,
            std::string_view region, std::string_view service) {
  Signed s;
  s.canonical_request = CanonicalRequest(req);
  std::string scope = CredentialScope(amz_date, region, service);
  s.string_to_sign = StringToSign(amz_date, scope, s.canonical_request);
  s.signature = HexEncode(
      HmacSha256(SigningKey(secret_access_key, amz_date, region, service), s.string_to_sign));
  std::string headers, signed_names;
  CanonicalHeaders(req.headers, &headers, &signed_names);
  s.authorization = "AWS4-HMAC-SHA256 Credential=";
  s.authorization += access_key_id;
  s.authorization += '/';
  s.authorization += scope;
  s.authorization += ",SignedHeaders=";
  s.authorization += signed_names;
  s.authorization += ",Signature=";
  s.authorization += s.signature;
  return s;
}

}  // namespace tw::sigv4
