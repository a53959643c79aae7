// tenantwal: AWS Signature Version 4 for S3 requests (Authorization header,
// single-chunk signed payload).
//
// Design: every step is a pure function of its inputs (no clock, no I/O), so
// the unit tests can pin each intermediate value against the worked examples
// in the S3 API Reference ("Signature Calculations for the Authorization
// Header: Transferring Payload in a Single Chunk", sig-v4-header-based-auth).
// The caller (s3_store.cc) supplies the timestamp, the already-computed
// payload SHA-256 and the exact headers it will send; Sign() returns the
// Authorization header value plus the intermediate strings for debugging.
//
// The algorithm, from the AWS SigV4 documentation ("Create a canonical
// request", "Create a string to sign", "Calculate the signature") and the S3
// specifics in the S3 API Reference:
//   CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n
//                      CanonicalHeaders \n SignedHeaders \n HexPayloadHash
//   StringToSign     = "AWS4-HMAC-SHA256" \n AmzDate \n Scope \n
//                      Hex(SHA256(CanonicalRequest))
//   Scope            = YYYYMMDD/region/service/aws4_request
//   SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region),
//                      service), "aws4_request")
//   Signature        = Hex(HMAC(SigningKey, StringToSign))
// S3 differs from other services in that the URI path is encoded exactly
// once and never normalized ("." and ".." segments and "//" are kept).
//
// Nothing in this file logs, and no returned string except the signing key
// itself depends on the secret in a reversible way.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tw::sigv4 {

// SHA-256 of the empty string, hex: the payload hash of GET/DELETE/LIST.
inline constexpr const char* kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// Lowercase hex of `bytes` (two characters per byte).
std::string HexEncode(std::string_view bytes);

// Lowercase hex SHA-256 of `data` (OpenSSL EVP).
std::string Sha256Hex(std::string_view data);

// Raw 32-byte HMAC-SHA256(key, data) (OpenSSL HMAC).
std::string HmacSha256(std::string_view key, std::string_view data);

// SigV4 "UriEncode": every byte except the unreserved set A-Z a-z 0-9 - . _ ~
// becomes %XX with uppercase hex (UTF-8 bytes are encoded individually, a
// space is %20, never '+'). '/' is kept only when `keep_slash` is true (the
// object-key path); query names and values encode it as %2F.
std::string UriEncode(std::string_view s, bool keep_slash);

// The canonical URI of an S3 request for the unencoded `path` (which starts
// with '/', e.g. "/bucket/dir/a b"): each '/'-separated segment UriEncoded
// once, separators kept, no dot-segment removal. "" becomes "/".
std::string CanonicalUri(std::string_view path);

// A query parameter, unencoded. A parameter without a value ("?lifecycle")
// has an empty value and canonicalizes as "lifecycle=".
using QueryParam = std::pair<std::string, std::string>;

// The canonical query string: names and values UriEncoded (slash encoded),
// "name=value" pairs sorted by encoded name then encoded value, joined by
// '&'. The same string is used as the request URL's query, so what is signed
// is exactly what is sent. "" when `params` is empty.
std::string CanonicalQueryString(const std::vector<QueryParam>& params);

// A request to sign. `headers` are the headers that will be sent and signed
// (names in any case; Host must be among them, and for S3 also
// x-amz-content-sha256 and x-amz-date, which Sign() does NOT add).
struct Request {
  std::string method;                 // "GET", "PUT", ...
  std::string path;                   // unencoded, e.g. "/bucket/key"
  std::vector<QueryParam> query;      // unencoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_sha256_hex;     // hex SHA-256 of the body
};

// Canonical headers and the SignedHeaders list. Names are lowercased, values
// trimmed with inner runs of spaces collapsed to one, sorted by name;
// repeated names are joined with ','. `canonical` ends with '\n' after each
// header line; `signed_names` is "a;b;c".
void CanonicalHeaders(const std::vector<std::pair<std::string, std::string>>& headers,
                      std::string* canonical, std::string* signed_names);

// The full canonical request (see the top of this file).
std::string CanonicalRequest(const Request& req);

// "YYYYMMDDTHHMMSSZ" for the UTC time `t` (the x-amz-date format).
std::string AmzDate(std::time_t t);

// "YYYYMMDD/region/service/aws4_request" for the date part of `amz_date`.
std::string CredentialScope(std::string_view amz_date, std::string_view region,
                            std::string_view service);

// The string to sign for `canonical_request` at `amz_date`.
std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request);

// The raw 32-byte signing key for the date part of `amz_date` ("YYYYMMDD...").
std::string SigningKey(std::string_view secret_access_key, std::string_view amz_date,
                       std::string_view region, std::string_view service);

struct Signed {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;       // 64 hex characters
  std::string authorization;   // the Authorization header value
};

// Signs `req` for `access_key_id`/`secret_access_key` at `amz_date`
// ("20130524T000000Z"), region and service ("s3"). The Authorization value is
// "AWS4-HMAC-SHA256 Credential=AKID/scope,SignedHeaders=...,Signature=..."
// (the exact form of the S3 examples).
Signed Sign(const Request& req, std::string_view access_key_id,
            std::string_view secret_access_key, std::string_view amz_date,
            std::string_view region, std::string_view service);

}  // namespace tw::sigv4
