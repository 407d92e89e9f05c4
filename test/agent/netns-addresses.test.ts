// Which namespace owns which address, read from a real named network namespace (ip netns add).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { ipv4ToInt, NetnsAddressBook } from '../../src/agent/netns-addresses.js';
import { isRoot, requirePrerequisite } from '../setup.js';

describe('agent: network namespace addresses', () => {
  it('reads dotted-quad IPv4 addresses as numbers and refuses everything else', () => {
    expect(ipv4ToInt('0.0.0.0')).to.equal(0);
    expect(ipv4ToInt('10.231.0.2')).to.equal(0x0ae70002);
    expect(ipv4ToInt('255.255.255.255')).to.equal(0xffffffff);
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '1.2.3.', '.1.2.3', '1.2.3.4x', '1234.1.1.1', '::1', 'fd00::127.0.0.1']) {
      expect(ipv4ToInt(bad), bad).to.equal(-1);
    }
  });

  describe('on the real kernel', function () {
    const name = `iwaddr${process.pid}`;
    before(function () {
      requirePrerequisite(this, isRoot, 'root (ip netns add)');
      execFileSync('ip', ['netns', 'add', name]);
      execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
      execFileSync('ip', ['-n', name, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']); // no dummy driver on every kernel
      execFileSync('ip', ['-n', name, 'addr', 'add', '10.247.0.1/24', 'dev', 'd0']);
      execFileSync('ip', ['-n', name, 'addr', 'add', 'fd00:247::1/64', 'dev', 'd0', 'nodad']);
      execFileSync('ip', ['-n', name, 'link', 'set', 'd0', 'up']);
    });
    after(() => {
      if (isRoot) execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    });

    it("says local for the namespace's own addresses and its loopback range, remote for others, unknown for namespaces it has not seen", async () => {
      const book = new NetnsAddressBook();
      await book.refresh();
      const netns = statSync(`/var/run/netns/${name}`).ino;
      const answers = Object.fromEntries(
        ['10.247.0.1', '127.0.0.1', '127.255.0.9', '10.247.0.2', '128.0.0.1', 'fd00:247::1', 'fd00:247::2'].map((ip) => [ip, book.owns(netns, ip)]),
      );
      expect(answers).to.deep.equal({
        '10.247.0.1': 'local',
        '127.0.0.1': 'local',
        '127.255.0.9': 'local',
        '10.247.0.2': 'remote',
        '128.0.0.1': 'remote',
        'fd00:247::1': 'local',
        'fd00:247::2': 'remote',
      });
      expect(book.owns(1, '10.247.0.1')).to.equal('unknown');
    });
  });
});
