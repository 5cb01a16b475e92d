package live_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-live/live"
)

// A dashboard publishes only the numbers that changed; MergeShallow keeps
// the rest.
func ExampleMergeShallow() {
	current := json.RawMessage(`{"users":40,"revenue":1200}`)
	next, err := live.MergeShallow(current, json.RawMessage(`{"users":42}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(next))
	// Output: {"users":42,"revenue":1200}
}

// MergePatch reaches into nested objects, and null deletes.
func ExampleMergePatch() {
	current := json.RawMessage(`{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"}}`)
	next, err := live.MergePatch(current, json.RawMessage(`{"title":"Hello!","author":{"familyName":null}}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(next))
	// Output: {"title":"Hello!","author":{"givenName":"John"}}
}

// A feed adds, updates and removes items by id. Adding an item that is
// already there changes nothing, so a repeated publication is harmless.
func ExampleMergeList() {
	merge := live.MergeList("id")
	value := json.RawMessage(`[{"id":"1","text":"first"}]`)
	for _, update := range []string{
		`{"type":"add","item":{"id":"2","text":"second"}}`,
		`{"type":"add","item":{"id":"2","text":"second"}}`,
		`{"type":"update","item":{"id":"1","done":true}}`,
		`{"type":"remove","id":"2"}`,
	} {
		var err error
		if value, err = merge(value, json.RawMessage(update)); err != nil {
			panic(err)
		}
		fmt.Println(string(value))
	}
	// Output:
	// [{"id":"2","text":"second"},{"id":"1","text":"first"}]
	// [{"id":"2","text":"second"},{"id":"1","text":"first"}]
	// [{"id":"2","text":"second"},{"id":"1","text":"first","done":true}]
	// [{"id":"1","text":"first","done":true}]
}

// A client holding version 7 applies the delta for version 8, and refetches
// when a version is missing.
func ExampleApplyDelta() {
	current := json.RawMessage(`{"orders":[{"id":1,"status":"new"}],"total":1}`)
	var d live.Delta
	if err := json.Unmarshal([]byte(`{"version":8,"changes":[
		{"op":"update","path":"orders.0.status","value":"paid"},
		{"op":"add","path":"note","value":"rush"}]}`), &d); err != nil {
		panic(err)
	}
	next, err := live.ApplyDelta(current, 7, d)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(next))

	_, err = live.ApplyDelta(current, 6, d)
	fmt.Println(errors.Is(err, live.ErrVersionGap))
	// Output:
	// {"orders":[{"id":1,"status":"paid"}],"total":1,"note":"rush"}
	// true
}

// A server that keeps a large value publishes what changed, or the whole
// value when a delta cannot say it.
func ExampleDiff() {
	old := json.RawMessage(`{"orders":[{"id":1,"status":"new"},{"id":2,"status":"new"}],"total":2,"draft":true}`)
	new := json.RawMessage(`{"orders":[{"id":1,"status":"new"},{"id":2,"status":"paid"}],"total":2}`)
	changes, ok, err := live.Diff(old, new)
	if err != nil {
		panic(err)
	}
	if !ok {
		fmt.Println("publish the whole value")
		return
	}
	b, _ := json.Marshal(live.Delta{Version: 8, Changes: changes})
	fmt.Println(string(b))
	// Output: {"version":8,"changes":[{"op":"update","path":"orders.1.status","value":"paid"},{"op":"remove","path":"draft"}]}
}
