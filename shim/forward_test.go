package shim

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/shutdown"
)

// slowPublisher takes a while for each event, as a publish to a busy containerd does.
type slowPublisher struct {
	mu     sync.Mutex // guards topics and closed
	topics []string
	closed bool
}

func (p *slowPublisher) Publish(ctx context.Context, topic string, e events.Event) error {
	time.Sleep(20 * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		panic("publish after close")
	}
	p.topics = append(p.topics, topic)
	return nil
}

func (p *slowPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// TestShutdownPublishesQueuedEvents: events sent before the shutdown (a Delete's
// TaskDelete, just before containerd's Shutdown) are published before the shutdown is
// done, after which the shim process exits.
func TestShutdownPublishesQueuedEvents(t *testing.T) {
	ctx, sd := shutdown.WithShutdown(context.Background())
	s := &service{events: make(chan any, 8), shutdown: sd}
	pub := &slowPublisher{}
	s.forward(ctx, pub)
	s.send(&eventstypes.TaskExit{ContainerID: "c"})
	s.send(&eventstypes.TaskDelete{ContainerID: "c"})
	sd.Shutdown()
	<-sd.Done()
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if want := []string{runtime.TaskExitEventTopic, runtime.TaskDeleteEventTopic}; !slices.Equal(pub.topics, want) {
		t.Fatalf("published by the end of the shutdown: %v, want %v", pub.topics, want)
	}
	if !pub.closed {
		t.Fatal("publisher not closed by the end of the shutdown")
	}
}
