// The moec extension: starts `moec lsp` for .moe files and hands the editor to it.
'use strict';

const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration('moec');
  const command = config.get('path') || 'moec';
  const debounce = config.get('debounce') || '150ms';
  const serverOptions = {
    command,
    args: ['lsp', '--debounce', debounce],
    transport: TransportKind.stdio,
  };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'moe' },
      { scheme: 'untitled', language: 'moe' },
    ],
  };
  client = new LanguageClient('moec', 'moec language server', serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('moec')) {
        vscode.window.showInformationMessage('moec: reload the window to use the new settings.');
      }
    }),
  );
  return client.start().catch((err) => {
    vscode.window.showErrorMessage(
      `moec: cannot start "${command} lsp" (${err.message}). Install moec or set moec.path.`,
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
