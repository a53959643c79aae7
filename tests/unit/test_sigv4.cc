// Unit tests for store/sigv4: AWS's published S3 SigV4 examples as test
// vectors, plus the encoding rules that differ between S3 and other services.
//
// The four vectors are the worked examples of the S3 API Reference,
// "Signature Calculations for the Authorization Header: Transferring Payload
// in a Single Chunk (AWS Signature Version 4)": example credentials
// AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 20130524,
// us-east-1, bucket "examplebucket" (virtual-hosted). Each one pins the
// canonical request text, the hash inside the string to sign, the signature
// and (for GET Object) the whole Authorization header, so a failure shows
// which step went wrong.

#include <doctest/doctest.h>

#include <string>

#include "store/sigv4.h"

using tw::sigv4::Request;

namespace {

constexpr const char* kAkid = "AKIAIOSFODNN7EXAMPLE";
constexpr const char* kSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
constexpr const char* kDate = "20130524T000000Z";
constexpr const char* kHost = "examplebucket.s3.amazonaws.com";
const std::string kEmpty = tw::sigv4::kEmptySha256;

tw::sigv4::Signed SignExample(const Request& r) {
  return tw::sigv4::Sign(r, kAkid, kSecret, kDate, "us-east-1", "s3");
}

// The hash that ends the string to sign.
std::string HashLine(const std::string& sts) { return sts.substr(sts.rfind('\n') + 1); }

}  // namespace

TEST_CASE("sigv4: primitives") {
  CHECK(tw::sigv4::Sha256Hex("") == kEmpty);
  // The S3 PUT example's payload.
  CHECK(tw::sigv4::Sha256Hex("Welcome to Amazon S3.") ==
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  CHECK(tw::sigv4::HexEncode(std::string("\x00\xff\x10", 3)) == "00ff10");
  // RFC 4231 test case 2 for HMAC-SHA256.
  CHECK(tw::sigv4::HexEncode(tw::sigv4::HmacSha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(tw::sigv4::AmzDate(1369353600) == kDate);  // 2013-05-24T00:00:00Z
  CHECK(tw::sigv4::CredentialScope(kDate, "us-east-1", "s3") ==
        "20130524/us-east-1/s3/aws4_request");
  CHECK(tw::sigv4::SigningKey(kSecret, kDate, "us-east-1", "s3").size() == 32);
}

TEST_CASE("sigv4: AWS example GET Object with Range") {
  Request r;
  r.method = "GET";
  r.path = "/test.txt";
  r.headers = {{"Host", kHost},
               {"Range", "bytes=0-9"},
               {"x-amz-content-sha256", kEmpty},
               {"x-amz-date", kDate}};
  r.payload_sha256_hex = kEmpty;
  auto s = SignExample(r);
  CHECK(s.canonical_request ==
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
        "x-amz-content-sha256:" + kEmpty + "\nx-amz-date:20130524T000000Z\n\n"
        "host;range;x-amz-content-sha256;x-amz-date\n" + kEmpty);
  CHECK(s.string_to_sign ==
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  CHECK(s.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(s.authorization ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST_CASE("sigv4: AWS example PUT Object (key needing encoding)") {
  const std::string payload = tw::sigv4::Sha256Hex("Welcome to Amazon S3.");
  Request r;
  r.method = "PUT";
  r.path = "/test$file.text";
  // Deliberately unsorted and mixed case: canonicalization must fix both.
  r.headers = {{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
               {"Host", kHost},
               {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
               {"x-amz-date", kDate},
               {"X-Amz-Content-Sha256", payload}};
  r.payload_sha256_hex = payload;
  auto s = SignExample(r);
  CHECK(s.canonical_request ==
        "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n"
        "host:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:" + payload +
        "\nx-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n" + payload);
  CHECK(HashLine(s.string_to_sign) ==
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  CHECK(s.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST_CASE("sigv4: AWS example GET Bucket Lifecycle (valueless query parameter)") {
  Request r;
  r.method = "GET";
  r.path = "/";
  r.query = {{"lifecycle", ""}};
  r.headers = {{"Host", kHost}, {"x-amz-date", kDate}, {"x-amz-content-sha256", kEmpty}};
  r.payload_sha256_hex = kEmpty;
  auto s = SignExample(r);
  CHECK(s.canonical_request.rfind("GET\n/\nlifecycle=\nhost:", 0) == 0);
  CHECK(HashLine(s.string_to_sign) ==
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
  CHECK(s.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST_CASE("sigv4: AWS example Get Bucket (List Objects), query sorted") {
  Request r;
  r.method = "GET";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};  // given out of order
  r.headers = {{"Host", kHost}, {"x-amz-date", kDate}, {"x-amz-content-sha256", kEmpty}};
  r.payload_sha256_hex = kEmpty;
  auto s = SignExample(r);
  CHECK(s.canonical_request.rfind("GET\n/\nmax-keys=2&prefix=J\n", 0) == 0);
  CHECK(HashLine(s.string_to_sign) ==
        "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
  CHECK(s.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST_CASE("sigv4: a different secret, date or region changes the signature") {
  Request r;
  r.method = "GET";
  r.path = "/test.txt";
  r.headers = {{"Host", kHost}, {"x-amz-date", kDate}, {"x-amz-content-sha256", kEmpty}};
  r.payload_sha256_hex = kEmpty;
  auto base = SignExample(r).signature;
  CHECK(tw::sigv4::Sign(r, kAkid, "other", kDate, "us-east-1", "s3").signature != base);
  CHECK(tw::sigv4::Sign(r, kAkid, kSecret, "20130525T000000Z", "us-east-1", "s3").signature !=
        base);
  CHECK(tw::sigv4::Sign(r, kAkid, kSecret, kDate, "eu-west-1", "s3").signature != base);
  // The secret never appears in what is sent.
  CHECK(SignExample(r).authorization.find(kSecret) == std::string::npos);
}

TEST_CASE("sigv4: URI encoding of object keys (S3 rules)") {
  using tw::sigv4::CanonicalUri;
  using tw::sigv4::UriEncode;
  // Unreserved characters pass through.
  CHECK(UriEncode("AZaz09-._~", false) == "AZaz09-._~");
  // Space is %20 (never '+'); reserved and sub-delims are encoded, hex uppercase.
  CHECK(UriEncode("a b+c", false) == "a%20b%2Bc");
  CHECK(UriEncode("!*'();:@&=+$,?#[]%", false) ==
        "%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%3F%23%5B%5D%25");
  // UTF-8 is encoded byte by byte.
  CHECK(UriEncode("\xc3\xa9", false) == "%C3%A9");
  CHECK(UriEncode(std::string("\x00\x7f", 2), false) == "%00%7F");
  // Slash: kept in paths, encoded in query components.
  CHECK(UriEncode("a/b", true) == "a/b");
  CHECK(UriEncode("a/b", false) == "a%2Fb");
  // Each path segment encoded once; no normalization of '.', '..' or '//'.
  CHECK(CanonicalUri("/bucket/dir/a b/%41") == "/bucket/dir/a%20b/%2541");
  CHECK(CanonicalUri("/bucket/./x/../y//z") == "/bucket/./x/../y//z");
  CHECK(CanonicalUri("") == "/");
  CHECK(CanonicalUri("/") == "/");
}

TEST_CASE("sigv4: canonical query string") {
  using tw::sigv4::CanonicalQueryString;
  CHECK(CanonicalQueryString({}) == "");
  // Sorted by encoded name; values strictly encoded (including '/' and '=').
  CHECK(CanonicalQueryString({{"prefix", "tenants/a b/"},
                              {"list-type", "2"},
                              {"delimiter", "/"},
                              {"continuation-token", "1/ab+c=="}}) ==
        "continuation-token=1%2Fab%2Bc%3D%3D&delimiter=%2F&list-type=2&"
        "prefix=tenants%2Fa%20b%2F");
  // Sorting happens after encoding (uppercase sorts before lowercase, byte order).
  CHECK(CanonicalQueryString({{"b", "1"}, {"B", "2"}, {"a", ""}}) == "B=2&a=&b=1");
  // Equal names are ordered by value.
  CHECK(CanonicalQueryString({{"k", "2"}, {"k", "1"}}) == "k=1&k=2");
}

TEST_CASE("sigv4: canonical headers trim, collapse and join") {
  std::string canon, names;
  tw::sigv4::CanonicalHeaders({{"X-Amz-Meta-B", "  two   spaces  here "},
                               {"host", "h"},
                               {"x-amz-meta-a", "v1"},
                               {"X-AMZ-META-A", "v2"}},
                              &canon, &names);
  CHECK(canon == "host:h\nx-amz-meta-a:v1,v2\nx-amz-meta-b:two spaces here\n");
  CHECK(names == "host;x-amz-meta-a;x-amz-meta-b");
}
