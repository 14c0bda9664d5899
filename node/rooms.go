package node

import (
	"hash/maphash"
	"sync"
)

// roomShards spreads the room index over independent locks so that connects
// and emits for different users do not contend.
const roomShards = 64

// room is one room's local members. ready is closed once the adapter has
// confirmed the node receives the room's broadcasts; err says if it failed.
type room struct {
	members map[*socket]struct{}
	ready   chan struct{}
	err     error
}

// roomIndex maps room names to this node's sockets in them: the per-user
// session index that emits walk, instead of scanning every session.
type roomIndex struct {
	seed   maphash.Seed
	shards [roomShards]struct {
		mu    sync.RWMutex
		rooms map[string]*room
	}
}

func newRoomIndex() *roomIndex {
	ri := &roomIndex{seed: maphash.MakeSeed()}
	for i := range ri.shards {
		ri.shards[i].rooms = make(map[string]*room)
	}
	return ri
}

func (ri *roomIndex) shard(name string) *struct {
	mu    sync.RWMutex
	rooms map[string]*room
} {
	return &ri.shards[maphash.String(ri.seed, name)%roomShards]
}

// join adds s to the room. It returns the room and whether s is its first
// local member, in which case the caller must subscribe and then call ready.
func (ri *roomIndex) join(name string, s *socket) (*room, bool) {
	sh := ri.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[name]
	if r == nil {
		r = &room{members: make(map[*socket]struct{}, 1), ready: make(chan struct{})}
		sh.rooms[name] = r
		r.members[s] = struct{}{}
		return r, true
	}
	r.members[s] = struct{}{}
	return r, false
}

// markReady records the outcome of the room's subscription.
func (r *room) markReady(err error) {
	r.err = err
	close(r.ready)
}

// leave removes s from the room and reports whether the room is now empty
// on this node (and has been dropped from the index).
func (ri *roomIndex) leave(name string, s *socket) bool {
	sh := ri.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[name]
	if r == nil {
		return false
	}
	if _, ok := r.members[s]; !ok {
		return false
	}
	delete(r.members, s)
	if len(r.members) > 0 {
		return false
	}
	delete(sh.rooms, name)
	return true
}

// each calls fn for every local member of the room. fn runs under the
// shard's read lock, so it must not block and must not touch the index.
func (ri *roomIndex) each(name string, fn func(*socket)) {
	sh := ri.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if r := sh.rooms[name]; r != nil {
		for s := range r.members {
			fn(s)
		}
	}
}

// count returns the number of local members of the room.
func (ri *roomIndex) count(name string) int {
	sh := ri.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if r := sh.rooms[name]; r != nil {
		return len(r.members)
	}
	return 0
}
