// Package sdkcheck compares the Datastar events that package livehtml
// makes, as a hub's one-channel SSE stream sends them, with those of
// Datastar's official Go SDK, byte for byte. It is a module of its own so
// that the SDK is a dependency of this test only.
package sdkcheck
