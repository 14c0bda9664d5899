package adapter

import (
	"slices"
	"strconv"
	"testing"
)

// checkRelay asserts that the recorder's copy of orig decodes to orig's
// message with the placeholder appended, from uid, with the relay flag.
func checkRelay(t *testing.T, orig []byte, name string) {
	t.Helper()
	_, want, err := DecodeBroadcast(orig)
	if err != nil {
		t.Fatalf("%s: the original does not decode: %v", name, err)
	}
	const ph, relay = "0123456789abcdef:XXXXXXXXXXXXXXXXXXXXXXXX", "fedcba9876543210"
	b, err := relayFrom(orig, "rec123", ph, relay)
	if err != nil {
		t.Fatalf("%s: relayFrom: %v", name, err)
	}
	uid, got, err := DecodeBroadcast(b)
	if err != nil {
		t.Fatalf("%s: the copy does not decode: %v", name, err)
	}
	wantData := append(rtDataStrings(want.Data), strconv.Quote(ph))
	if uid != "rec123" || got.Relay != relay || got.Nsp != want.Nsp ||
		!slices.Equal(rtDataStrings(got.Data), wantData) || !slices.Equal(got.Rooms, want.Rooms) ||
		!slices.Equal(got.Except, want.Except) || len(got.Attachments) != len(want.Attachments) {
		t.Fatalf("%s: copy %s %+v, want data %v of %+v", name, uid, got, wantData, want)
	}
	if peekRelay(string(b)) != relay {
		t.Fatalf("%s: the relay flag is not where nodes peek for it", name)
	}
}

// What the official emitter publishes, copied without re-encoding.
func TestRelayFromEmitterFixtures(t *testing.T) {
	var fixtures []emitterFixture
	readFixtures(t, "emitter-fixtures.json", &fixtures)
	n := 0
	for _, f := range fixtures {
		b := unhex(t, f.Hex)
		if _, _, err := DecodeBroadcast(b); err != nil {
			continue // requests
		}
		checkRelay(t, b, f.Call)
		n++
	}
	if n < 5 {
		t.Fatalf("%d emitter broadcasts checked", n)
	}
	// With flags that are not empty and an except list, from EncodeBroadcast.
	m := rtToRooms(rtMsg("e", `{"a":[1,2.5,"x"]}`, `null`), "user:1")
	m.Except = []string{"sid1"}
	m.Relay = "0000000000000000"
	checkRelay(t, mustEncode(t, "emitter", m), "encoded")
	// Malformed inputs are refused, never half copied.
	good := mustEncode(t, "emitter", rtToRooms(rtMsg("e", "1"), "user:1"))
	for i := range len(good) {
		if _, err := relayFrom(good[:i], "rec123", "p", "r"); err == nil {
			t.Fatalf("a %d-byte prefix was copied", i)
		}
	}
}

func FuzzRelayFrom(f *testing.F) {
	f.Add(mustEncode(f, "emitter", rtToRooms(rtMsg("e", `{"k":[1,"two",null]}`), "user:1")))
	f.Add([]byte{0x93, 0xa1, 'x', 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := relayFrom(b, "rec123", "0123456789abcdef:XXXXXXXXXXXXXXXXXXXXXXXX", "fedcba9876543210")
		if err != nil {
			return
		}
		_, want, werr := DecodeBroadcast(b)
		_, got, gerr := DecodeBroadcast(out)
		if werr == nil && (gerr != nil || got.Relay != "fedcba9876543210" || len(got.Data) != len(want.Data)+1 ||
			!slices.Equal(rtDataStrings(got.Data[:len(want.Data)]), rtDataStrings(want.Data))) {
			t.Fatalf("copy of a valid broadcast differs: %v, %+v vs %+v", gerr, got, want)
		}
	})
}
