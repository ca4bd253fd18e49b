// Field Service bookings -> Outlook calendars: everything the Functions app needs, identity-only.
// Deploy with `azd up`, or `az deployment sub create -l <region> -f infra/main.bicep -p infra/main.parameters.json`.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment (azd), used in resource names.')
param environmentName string

@minLength(1)
@description('Azure region for every resource.')
param location string

@description('Comma-separated Dataverse environment URLs, e.g. https://contoso.crm.dynamics.com')
param dataverseEnvironments string

@description('NCRONTAB schedule of the sync timer.')
param syncSchedule string = '0 */15 * * * *'

@allowed([
  'fieldservice'
  'enhanced'
])
@description('fieldservice = documented Dynamics 365 behaviour; enhanced = improvements on.')
param syncProfile string = 'fieldservice'

@description('Optional: object id of a person or group allowed to read the state tables (troubleshooting).')
param operatorPrincipalId string = ''

@description('Optional: an address the alerts (failed or blocked cycle, mailboxes turned Failure, no successful cycle for an hour) are mailed to.')
param alertEmail string = ''

@description('Client id of the app registration administrators sign in to (App Service Authentication); its app roles are Sync.Operator and Mailbox.Approver. Empty: the administrative routes refuse every call.')
param adminAppClientId string = ''

@description('Optional: mailbox domains and the Microsoft Entra tenants that hold them, e.g. contoso.com=home,fabrikam.com=<tenant id>. Empty: every mailbox is in this tenant.')
param mailboxTenants string = ''

@description('Client id of the multi-tenant app registration that trusts the managed identity (docs/cross-tenant.md); needed when mailboxTenants names another tenant. No secret: a federated identity credential.')
param crossTenantAppClientId string = ''

@allowed([
  'true'
  'false'
])
@description('WEBHOOK_HEADER_SECRET references the secret webhook-header-secret in the Key Vault (on by default: the webhook refuses every request until the secret exists). false leaves the function key in the query string as the only check.')
param webhookSecretInKeyVault string = 'true'

@allowed([
  'true'
  'false'
])
@description('Private-network mode: virtual network integration for the app, private endpoints for the state storage and the Key Vault, their public endpoints closed (docs/deploy.md). Off by default.')
param privateNetworking string = 'false'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'fieldservice-outlook-sync'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app.bicep' = {
  name: 'fieldservice-outlook-sync'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    dataverseEnvironments: dataverseEnvironments
    syncSchedule: syncSchedule
    syncProfile: syncProfile
    operatorPrincipalId: operatorPrincipalId
    alertEmail: alertEmail
    webhookSecretInKeyVault: webhookSecretInKeyVault
    privateNetworking: privateNetworking
    adminAppClientId: adminAppClientId
    mailboxTenants: mailboxTenants
    crossTenantAppClientId: crossTenantAppClientId
  }
}

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output MANAGED_IDENTITY_CLIENT_ID string = app.outputs.identityClientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output AZURE_TENANT_ID string = tenant().tenantId
output STATE_STORAGE_TABLE_ENDPOINT string = app.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = app.outputs.applicationInsightsName
output KEY_VAULT_NAME string = app.outputs.keyVaultName
