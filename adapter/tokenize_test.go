package adapter

import (
	"bytes"
	"encoding/json"
	"testing"
)

// referenceTokenize is the tokenizer tokenize replaced, on encoding/json's
// Decoder.Token: the oracle for FuzzTokenize.
func referenceTokenize(raw []byte) ([]jtok, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var tape []jtok
	var open []int
	for d.More() || len(open) > 0 {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		if t == json.Delim(']') || t == json.Delim('}') {
			if t == json.Delim('}') {
				tape[open[len(open)-1]].n /= 2
			}
			open = open[:len(open)-1]
			continue
		}
		if len(open) > 0 {
			tape[open[len(open)-1]].n++
		}
		tok := jtok{kind: 'z'}
		switch v := t.(type) {
		case json.Delim:
			tok.kind = byte(v)
			open = append(open, len(tape))
		case string:
			tok = jtok{kind: 's', s: v}
		case json.Number:
			tok = jtok{kind: 'n', s: string(v)}
		case bool:
			tok.kind = 'f'
			if v {
				tok.kind = 't'
			}
		}
		tape = append(tape, tok)
	}
	return tape, nil
}

var tokenizeSeeds = []string{
	`"new_message"`, `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`, ` [ 1 , -2.5e+3 , 0.0 , 1E9 ] `,
	`"esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00"`, `"bad \ud800 surrogate"`, "\"invalid \xff\xfe utf-8\"",
	`"é plain multibyte"`, `{"_placeholder":true,"num":0}`, `[]`, `{}`, `[[[[]]]]`, `""`, `0`, `-0`,
	`{"k":"v","k":"w"}`, `12345678901234567890123`, `"\u0000"`,
}

func FuzzTokenize(f *testing.F) {
	for _, s := range tokenizeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		want, err := referenceTokenize(raw)
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		got, err := tokenize(raw, nil)
		if err != nil {
			t.Fatalf("tokenize(%q): %v", raw, err)
		}
		if len(got) != len(want) {
			t.Fatalf("tokenize(%q): %d tokens, want %d", raw, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("tokenize(%q)[%d] = %+v, want %+v", raw, i, got[i], want[i])
			}
		}
	})
}

func TestTokenizeAllocations(t *testing.T) {
	raw := []byte(`{"conversationId":"c-77","message":{"id":"m-9","content":"Hi there","n":3},"unreadCount":3}`)
	if n := testing.AllocsPerRun(100, func() {
		var small [32]jtok
		_, _ = tokenize(raw, small[:0])
	}); n != 0 {
		t.Errorf("tokenize allocates %v times for a plain event", n)
	}
}
