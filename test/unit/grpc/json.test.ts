/** The protobuf JSON mapping, both ways, on a real protobufjs root. */
import t from 'tap';
import { jsonToMessage, JsonMappingError, messageToJson } from '../../../src/grpc/transcode/json';
import { loadProtos } from '../../../src/grpc/transcode/protos';

const SRC = `syntax = "proto3";
package j;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/any.proto";
import "google/protobuf/empty.proto";
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; BLUE = 2; }
message Inner { string inner_name = 1; }
message M {
  int32 i32 = 1; int64 i64 = 2; uint32 u32 = 3; uint64 u64 = 4; sint64 s64 = 5; fixed64 f64 = 6;
  double d = 7; float f = 8; bool b = 9; string s = 10; bytes by = 11; Color color = 12;
  google.protobuf.Timestamp ts = 13; google.protobuf.Duration dur = 14;
  google.protobuf.Struct st = 15; google.protobuf.Value v = 16; google.protobuf.ListValue lv = 17;
  google.protobuf.Int64Value w64 = 18; google.protobuf.BoolValue wb = 19; google.protobuf.StringValue ws = 20;
  google.protobuf.BytesValue wby = 21; google.protobuf.DoubleValue wd = 22; google.protobuf.UInt32Value wu32 = 23;
  google.protobuf.FieldMask mask = 24; google.protobuf.Any any = 25; google.protobuf.Empty empty = 26;
  repeated int64 r64 = 27; map<string, Inner> by_key = 28; map<int32, string> by_int = 29; map<bool, string> by_bool = 30;
  Inner inner = 31; repeated Color colors = 32; string snake_case_name = 33; string custom = 34 [json_name = "renamed"];
  oneof choice { string one_a = 35; int32 one_b = 36; }
}`;

const loaded = loadProtos([{ name: 'j.proto', source: SRC }]);
if (!loaded.ok) throw new Error(loaded.error.message);
const M = loaded.root.lookupType('j.M');
const roundTrip = (json: unknown, opts = {}) => messageToJson(M, jsonToMessage(M, json), opts);

t.test('round trip: every kind of field', async (t) => {
  const json = {
    i32: -5,
    i64: '-9223372036854775808',
    u32: 4294967295,
    u64: '18446744073709551615',
    s64: '-3',
    f64: '7',
    d: 1.25,
    f: 0.5,
    b: true,
    s: 'hé',
    by: 'AAEC/w==',
    color: 'BLUE',
    ts: '1970-01-01T00:00:01.000000001Z',
    dur: '-1.500s', // output has 0, 3, 6 or 9 fractional digits
    st: { a: 1, b: 'x', c: null, d: [true, { e: [] }] },
    v: 'text',
    lv: [1, 'two', null],
    w64: '5',
    wb: false,
    ws: '',
    wby: 'AQ==',
    wd: 2.5,
    wu32: 9,
    mask: 'a.bC,dE',
    empty: {},
    r64: ['1', '2'],
    byKey: { k: { innerName: 'n' } },
    byInt: { '-1': 'minus one' },
    byBool: { true: 'yes' },
    inner: { innerName: 'i' },
    colors: ['RED', 'BLUE'],
    snakeCaseName: 'x',
    renamed: 'r',
    oneB: 3,
  };
  t.same(roundTrip(json), json);
});

t.test('accepted input forms', async (t) => {
  t.same(roundTrip({ i64: 42, u64: '42', i32: '7', d: 'NaN', f: '-Infinity' }), { i32: 7, i64: '42', u64: '42', d: 'NaN', f: '-Infinity' }, 'numbers as strings and 64-bit as numbers');
  t.same(roundTrip({ snake_case_name: 'x', custom: 'c', inner: { inner_name: 'y' } }), { snakeCaseName: 'x', renamed: 'c', inner: { innerName: 'y' } }, 'original field names');
  t.same(roundTrip({ color: 2, colors: [1] }), { color: 'BLUE', colors: ['RED'] }, 'enums by number');
  t.same(roundTrip({ ts: '2024-02-29T23:59:59+02:00' }), { ts: '2024-02-29T21:59:59Z' }, 'timestamp offsets');
  t.same(roundTrip({ ts: '0001-01-01T00:00:00Z' }), { ts: '0001-01-01T00:00:00Z' }, 'year 1');
  t.same(roundTrip({ by: '_-8', s: null }), { by: '/+8=' }, 'URL-safe base64; null means default');
  t.same(roundTrip({ v: null }), { v: null }, 'a null Value');
  t.same(roundTrip({ any: { '@type': 'type.googleapis.com/j.Inner', innerName: 'a' } }), { any: { '@type': 'type.googleapis.com/j.Inner', inner_name: 'a' } }, 'Any');
  t.same((roundTrip({}, { emitDefaults: true }) as { i64: string }).i64, '0', 'emitDefaults prints zero values');
});

t.test('errors name the field and the problem', async (t) => {
  const cases: [unknown, RegExp][] = [
    [[], /expected an object for j\.M/],
    [{ nope: 1 }, /^nope: unknown field \(j\.M has i32, i64/],
    [{ i32: 1.5 }, /^i32: expected an integer/],
    [{ i32: 2147483648 }, /out of range for int32/],
    [{ u32: -1 }, /out of range for uint32/],
    [{ i64: 2 ** 60 }, /send 64-bit integers as strings/],
    [{ i64: 'x' }, /expected an integer \(a number or a decimal string\)/],
    [{ b: 'true' }, /^b: expected true or false/],
    [{ s: 1 }, /^s: expected a string/],
    [{ by: '***' }, /expected base64/],
    [{ d: 'lots' }, /expected a number/],
    [{ color: 'GREEN' }, /unknown value "GREEN" for enum j\.Color \(one of COLOR_UNSPECIFIED, RED, BLUE\)/],
    [{ ts: '2024-02-30T00:00:00Z' }, /invalid date or time/],
    [{ ts: 1 }, /expected an RFC 3339 timestamp/],
    [{ dur: '5m' }, /expected a duration such as "1.5s"/],
    [{ mask: 3 }, /expected a field mask string/],
    [{ st: [] }, /^st: expected an object/],
    [{ lv: {} }, /^lv: expected an array/],
    [{ r64: 'x' }, /^r64: expected an array/],
    [{ r64: [null] }, /^r64\[0\]: array elements must not be null/],
    [{ byKey: [] }, /expected an object \(map\)/],
    [{ byInt: { x: 'a' } }, /^byInt\.x: expected an integer/],
    [{ byBool: { yes: 'a' } }, /map key must be "true" or "false"/],
    [{ byKey: { k: null } }, /map values must not be null/],
    [{ inner: { innerName: 'a', inner_name: 'b' } }, /inner\.inner_name: field inner_name set twice/],
    [{ oneA: 'a', oneB: 1 }, /only one of oneof choice may be set/],
    [{ any: { innerName: 'a' } }, /is required for google\.protobuf\.Any/],
    [{ any: { '@type': 'type.googleapis.com/j.Nope' } }, /unknown type/],
    [{ inner: 'x' }, /^inner: expected an object for j\.Inner/],
  ];
  for (const [json, re] of cases) {
    t.throws(() => jsonToMessage(M, json), JsonMappingError, JSON.stringify(json));
    try {
      jsonToMessage(M, json);
    } catch (e) {
      t.match((e as Error).message, re, JSON.stringify(json));
    }
  }
});
