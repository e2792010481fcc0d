// flanneld's UDP backend framing: the datagram payload is the bare inner IPv4 packet, with no
// header of its own (the kernel's UDP socket adds the outer IP and UDP headers).

// Returns where the datagram starts for the inner packet at ip.
@inline export function udpFrame(ip: u32): u32 { return ip; }
